use super::*;
use proptest::prelude::*;

#[test]
fn sizes() {
    let gib = 1u64 << 30;
    let ok: &[(&str, u64)] = &[
        ("0", 0),
        ("4096", 4096),
        ("4096B", 4096),
        ("1k", 1024),
        ("1K", 1024),
        ("1KB", 1024),
        ("1kib", 1024),
        ("1GiB", gib),
        ("1g", gib),
        ("1GB", gib),
        ("10 GiB", 10 * gib),
        (" 2 MiB ", 2 << 20),
        ("1.5GiB", gib + gib / 2),
        ("1.5k", 1536),
        ("1.50k", 1536),
        ("64.0000000000G", 64 * gib),
        ("1t", 1 << 40),
        ("1p", 1 << 50),
        ("0.5k", 512),
        ("007k", 7 * 1024),
        // 2^-40 TiB is exactly one byte, written with 40 decimal places.
        ("0.0000000000009094947017729282379150390625t", 1),
    ];
    for (text, want) in ok {
        assert_eq!(parse_size(text), Ok(*want), "{text:?}");
    }
    for text in [
        "", "G", ".5G", "1.G", "1..5G", "-1G", "1xb", "1 G B", "ten", "1ib", "1e3", "1,5G",
    ] {
        assert_eq!(
            parse_size(text),
            Err(UnitError::Size(text.into())),
            "{text:?}"
        );
    }
    for text in ["0.1k", "1.5", "0.3B", "64.0000000001G"] {
        assert!(
            matches!(parse_size(text), Err(UnitError::Fraction(..))),
            "{text:?}"
        );
    }
    for text in [
        "16384p",
        "99999999999999T",
        "184467440737095516160",
        "123456789012345678901234k",
    ] {
        assert_eq!(
            parse_size(text),
            Err(UnitError::SizeRange(text.into())),
            "{text:?}"
        );
    }
}

/// The issue that made this crate: a long fraction overflowed the old parser's u128 and came out
/// whole (`64.00000000316912650057057350374175801344G` was stored as 64 GiB).
#[test]
fn a_long_fraction_is_exact_not_wrapped() {
    let text = "64.00000000316912650057057350374175801344G";
    // 0.00000000316912650057057350374175801344 GiB = 3.4028… bytes: not whole.
    assert!(matches!(parse_size(text), Err(UnitError::Fraction(..))));
    // Many digits, none significant, are harmless; many significant ones are refused, not wrapped.
    assert_eq!(parse_size(&format!("1.{}g", "0".repeat(500))), Ok(1 << 30));
    assert!(matches!(
        parse_size(&format!("1.{}1g", "0".repeat(500))),
        Err(UnitError::Fraction(..))
    ));
}

#[test]
fn rates() {
    assert_eq!(parse_rate("100MiB/s"), Ok(100 << 20));
    assert_eq!(parse_rate("50MiB"), Ok(50 << 20));
    assert_eq!(parse_rate("1g"), Ok(1 << 30));
    assert!(parse_rate("0/s").is_err());
    assert!(parse_rate("fast").is_err());
}

#[test]
fn durations() {
    let ok: &[(&str, u64)] = &[
        ("0", 0),
        ("90", 90_000),
        ("500ms", 500),
        ("5s", 5_000),
        ("2m", 120_000),
        ("1h", HOUR_MS),
        ("1d", DAY_MS),
        ("1h30m", 90 * MINUTE_MS),
        ("1m30s250ms", 90_250),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration_ms(text), Ok(*want), "{text:?}");
    }
    for text in ["", "5x", "s", "1m1h", "1s1s", "1.5s", "-1s", "1 s"] {
        assert_eq!(
            parse_duration_ms(text),
            Err(UnitError::Duration(text.into())),
            "{text:?}"
        );
    }
    assert_eq!(
        parse_duration_ms("99999999999999999999d"),
        Err(UnitError::DurationRange("99999999999999999999d".into()))
    );
    assert_eq!(parse_duration_secs("5m"), Ok(300));
    assert_eq!(parse_duration_secs("45"), Ok(45));
    assert!(parse_duration_secs("1500ms").is_err());
}

#[test]
fn formatting() {
    assert_eq!(fmt_size(0), "0 B");
    assert_eq!(fmt_size(1023), "1023 B");
    assert_eq!(fmt_size(1024), "1 KiB");
    assert_eq!(fmt_size(1536), "1.5 KiB");
    assert_eq!(fmt_size(10 << 30), "10 GiB");
    assert_eq!(fmt_size(8192 << 20), "8 GiB");
    assert_eq!(fmt_size(u64::MAX), "16384 PiB");
    assert_eq!(fmt_size_in(8192 << 20, 30), "8.0 GiB");
    assert_eq!(fmt_size_in(512 << 20, 30), "0.5 GiB");
    assert_eq!(unit_shift(0), 0);
    assert_eq!(unit_shift(1023), 0);
    assert_eq!(unit_shift(1024), 10);
    assert_eq!(unit_shift(10 << 30), 30);
    assert_eq!(unit_shift(u64::MAX), 50);
    // A column of 10 GiB and 8192 MiB prints both in GiB.
    let shift = unit_shift(10 << 30);
    assert_eq!(fmt_size_in(8192 << 20, shift), "8.0 GiB");
}

proptest! {
    /// Every whole multiple of every unit parses back to itself, in every spelling.
    #[test]
    fn whole_units_round_trip(n in 0u64..1_000_000, shift_i in 0usize..5, spelling in 0usize..3) {
        let shift = [0u32, 10, 20, 30, 40][shift_i];
        let stem = ["", "k", "m", "g", "t"][shift_i];
        let unit = match (shift, spelling) {
            (0, _) => String::from("B"),
            (_, 0) => stem.to_string(),
            (_, 1) => format!("{}B", stem.to_uppercase()),
            _ => format!("{}iB", stem.to_uppercase()),
        };
        prop_assert_eq!(parse_size(&format!("{n}{unit}")), Ok(n << shift));
    }

    /// A fraction is accepted exactly when it is a whole number of bytes, and then it is exact.
    #[test]
    fn fractions_are_exact(bytes in 0u64..(1 << 40), shift_i in 1usize..5) {
        let shift = [0u32, 10, 20, 30, 40][shift_i];
        let stem = ["", "k", "m", "g", "t"][shift_i];
        // bytes / 2^shift written exactly in decimal (it terminates: the denominator is 2^k).
        let int = bytes >> shift;
        let rem = u128::from(bytes & ((1u64 << shift) - 1));
        let mut digits = String::new();
        let mut r = rem;
        while r != 0 {
            r *= 10;
            digits.push(char::from(b'0' + (r >> shift) as u8));
            r &= (1u128 << shift) - 1;
        }
        let text = if digits.is_empty() { format!("{int}{stem}") } else { format!("{int}.{digits}{stem}") };
        prop_assert_eq!(parse_size(&text), Ok(bytes));
        // One more significant digit makes it not whole.
        if !digits.is_empty() {
            let text = format!("{int}.{digits}1{stem}");
            prop_assert!(matches!(parse_size(&text), Err(UnitError::Fraction(..))));
        }
    }

    #[test]
    fn never_panics(s in "\\PC{0,40}") {
        let _ = parse_size(&s);
        let _ = parse_duration_ms(&s);
        let _ = parse_rate(&s);
    }
}
