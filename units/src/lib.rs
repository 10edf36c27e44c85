//! Sizes and durations written as text, read one way everywhere in Berth: service labels, the
//! compact cluster TOML, scenario files, volume options and command-line flags.
//!
//! **Sizes** use binary multiples whatever the spelling, as Docker's `--memory`/`--reserve-memory`
//! (`RAMInBytes`) and Flocker's `-o size=` do: `1k` = `1KB` = `1KiB` = 1024 bytes, and so on for
//! `m`, `g`, `t`, `p`. Case does not matter and a space may separate number and unit. A fraction
//! is allowed only when it comes out a whole number of bytes (`1.5k` = 1536, `0.1k` is refused),
//! computed exactly in integers: no float ever rounds a size.
//!
//! **Durations** are integer milliseconds: `500ms`, `5s`, `2m`, `1h`, `1d`, chained largest first
//! (`1h30m`); a bare integer is seconds (`90` = `90s`), as `berth.recreate-grace` always read it.
//!
//! Why a crate of its own: the engine must stay free of workspace dependencies and the volume
//! driver must not depend on the engine, yet all three crates must agree on what `GB` means.

use std::fmt;

/// Why a size or duration was refused. The message names the text and gives the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}`: expected a size such as 4096, 512KiB, 100MiB, 1.5GiB or 10g (binary units)")]
    Size(String),
    #[error("`{0}`: {1} is not a whole number of bytes")]
    Fraction(String, String),
    #[error("`{0}`: too large (at most 16 EiB)")]
    SizeRange(String),
    #[error("`{0}`: expected a duration such as 500ms, 30s, 5m, 1h, 1h30m or a number of seconds")]
    Duration(String),
    #[error("`{0}`: duration too large")]
    DurationRange(String),
    #[error("`{0}`: expected a rate such as 100MiB/s")]
    Rate(String),
}

/// The power of two a size unit multiplies by, or `None` if the unit is not one of ours.
fn size_shift(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_lowercase();
    let stem = match u.as_str() {
        "" | "b" => return Some(0),
        _ => u
            .strip_suffix("ib")
            .or_else(|| u.strip_suffix('b'))
            .unwrap_or(&u),
    };
    Some(match stem {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    })
}

/// Parses a size into bytes (binary multiples; see the crate docs).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = size_shift(unit.trim_start()).ok_or_else(bad)?;
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) if !i.is_empty() && !f.is_empty() && !f.contains('.') => (i, f),
        Some(_) => return Err(bad()),
        None if !num.is_empty() => (num, ""),
        None => return Err(bad()),
    };
    let range = || UnitError::SizeRange(text.to_string());
    let int = int.trim_start_matches('0');
    // u64 has at most 20 digits; anything longer is out of range whatever the unit.
    if int.len() > 20 {
        return Err(range());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac = frac.trim_end_matches('0');
    let part = fraction_bytes(frac, shift)
        .ok_or_else(|| UnitError::Fraction(text.to_string(), format!("0.{frac}{}", unit.trim())))?;
    u64::try_from((int << shift) + part).map_err(|_| range())
}

/// `0.<frac> × 2^shift` in bytes, exactly, or `None` when that is not a whole number.
///
/// With trailing zeros stripped, `frac` (d digits, value f) gives a whole number only if
/// 10^d divides f·2^shift, that is 5^d | f and, when d > shift, 2 | f as well — impossible, as
/// f would then end in 0. So d ≤ shift ≤ 50, 5^d fits in u128, and f/5^d < 2^d: long division
/// digit by digit stays in range however many digits the text has.
fn fraction_bytes(frac: &str, shift: u32) -> Option<u128> {
    let d = u32::try_from(frac.len()).ok()?;
    if d == 0 {
        return Some(0);
    }
    if d > shift {
        return None;
    }
    let m = 5u128.pow(d);
    let (mut q, mut r) = (0u128, 0u128);
    for digit in frac.bytes() {
        let cur = r * 10 + u128::from(digit - b'0');
        q = q * 10 + cur / m;
        r = cur % m;
    }
    (r == 0).then(|| q << (shift - d))
}

/// Parses a bandwidth such as `100MiB/s` (or a bare size, read per second) into bytes per
/// second; zero is refused.
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let size = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(size) {
        Ok(0) | Err(_) => Err(UnitError::Rate(text.to_string())),
        Ok(v) => Ok(v),
    }
}

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// Parses a duration into milliseconds (see the crate docs).
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Duration(text.to_string());
    let range = || UnitError::DurationRange(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| range())?;
        return secs.checked_mul(SECOND_MS).ok_or_else(range);
    }
    let mut total: u64 = 0;
    let mut last_mult = u64::MAX;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| range())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let mult = match &rest[..unit_len] {
            "ms" => 1,
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            _ => return Err(bad()),
        };
        // Largest first, each unit once: `1m1h` and `1s1s` are typos, not sums.
        if mult >= last_mult {
            return Err(bad());
        }
        last_mult = mult;
        rest = &rest[unit_len..];
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(range)?;
    }
    Ok(total)
}

/// Parses a duration that must be whole seconds (a label such as `berth.recreate-grace`).
pub fn parse_duration_secs(text: &str) -> Result<u64, UnitError> {
    let ms = parse_duration_ms(text)?;
    if ms % SECOND_MS != 0 {
        return Err(UnitError::Duration(text.to_string()));
    }
    Ok(ms / SECOND_MS)
}

/// A byte count in the one unit a reader expects for it: the largest binary unit that keeps at
/// least one whole unit, with up to one decimal (`1.5 GiB`, `512 MiB`, `100 B`).
pub fn fmt_size(bytes: u64) -> String {
    Size(bytes).to_string()
}

/// A byte count rendered with [`fmt_size`]'s rule, for `format!` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let b = self.0;
        let shift = (unit_shift(b) / 10) as usize;
        if shift == 0 {
            return write!(f, "{b} B");
        }
        let unit = 1u128 << (10 * shift);
        // Tenths, rounded half up, in integers so the same bytes always print the same text.
        let tenths = (u128::from(b) * 10 + unit / 2) / unit;
        let (whole, tenth) = (tenths / 10, tenths % 10);
        if tenth == 0 {
            write!(f, "{whole} {}", UNITS[shift])
        } else {
            write!(f, "{whole}.{tenth} {}", UNITS[shift])
        }
    }
}

/// The binary unit [`fmt_size`] picks for `bytes`, as a shift (0 = B, 10 = KiB, … 50 = PiB).
/// A column takes the shift of its largest value and prints every cell with [`fmt_size_in`].
pub fn unit_shift(bytes: u64) -> u32 {
    (0..6u32).rev().find(|i| bytes >> (10 * i) > 0).unwrap_or(0) * 10
}

/// A size expressed in one given unit, for columns that must not mix units (`10 GiB` beside
/// `8 GiB`, never beside `8192 MiB`): one decimal, binary unit named by `shift` (10 = KiB, …).
pub fn fmt_size_in(bytes: u64, shift: u32) -> String {
    let name = match shift {
        0 => "B",
        10 => "KiB",
        20 => "MiB",
        30 => "GiB",
        40 => "TiB",
        50 => "PiB",
        _ => panic!("fmt_size_in: shift {shift} is not a binary unit"),
    };
    if shift == 0 {
        return format!("{bytes} B");
    }
    let unit = 1u128 << shift;
    let tenths = (u128::from(bytes) * 10 + unit / 2) / unit;
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests;
