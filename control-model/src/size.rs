//! Flocker's size forms (`10g`, `10GB`, `10GiB`, `512mib`, plain bytes), read by `berth_units`
//! (binary multiples), checked against the dataset API's rules (at least 64 MiB, at most
//! [`MAX_SIZE`], a multiple of 1024). The plugin's `size` option and the control API's
//! `maximum_size` share [`check`], so neither accepts what the other refuses.

/// Why a size option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error(transparent)]
    Parse(#[from] berth_units::UnitError),
    #[error("size {0:?} is below the 64 MiB minimum")]
    TooSmall(String),
    #[error("size {0:?} is not a multiple of 1024 bytes")]
    NotMultiple(String),
    #[error("size {0:?} is above the 1 PiB ceiling")]
    TooLarge(String),
}

/// The smallest `maximum_size` the Flocker API accepts.
pub const MIN_SIZE: u64 = 64 * 1024 * 1024;

/// The largest `maximum_size` accepted: 1 PiB. Far above any one node's disk or a shared
/// volume Berth is meant for, and low enough that a slip of unit (`1e` for `1g`, an exabyte)
/// is refused at Create rather than recorded as a volume no backend could hold.
pub const MAX_SIZE: u64 = 1 << 50;

/// Parses a Flocker size expression into a dataset size in bytes (the API's rules applied).
pub fn parse(expr: &str) -> Result<u64, SizeError> {
    let bytes = parse_bytes(expr)?;
    check(bytes, expr)?;
    Ok(bytes)
}

/// The dataset API's rules on a size in bytes; `shown` is how the caller wrote it.
pub fn check(bytes: u64, shown: &str) -> Result<(), SizeError> {
    if bytes < MIN_SIZE {
        return Err(SizeError::TooSmall(shown.to_string()));
    }
    if bytes > MAX_SIZE {
        return Err(SizeError::TooLarge(shown.to_string()));
    }
    if !bytes.is_multiple_of(1024) {
        return Err(SizeError::NotMultiple(shown.to_string()));
    }
    Ok(())
}

/// Parses a size expression into bytes with no dataset rules: for amounts that are not dataset
/// sizes, such as a transfer rate. Berth's one reading of sizes (`berth_units`): binary
/// multiples, and a fraction must come out a whole number of bytes.
pub fn parse_bytes(expr: &str) -> Result<u64, SizeError> {
    Ok(berth_units::parse_size(expr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let gib = 1u64 << 30;
        let cases: &[(&str, Result<u64, SizeError>)] = &[
            ("1GiB", Ok(gib)),
            ("1g", Ok(gib)),
            ("1GB", Ok(gib)),
            ("10gib", Ok(10 * gib)),
            ("64MiB", Ok(MIN_SIZE)),
            ("1.5GiB", Ok(gib + gib / 2)),
            ("1t", Ok(1 << 40)),
            ("67108864", Ok(MIN_SIZE)),
            ("65536k", Ok(MIN_SIZE)),
            ("1MiB", Err(SizeError::TooSmall("1MiB".into()))),
            ("67108865", Err(SizeError::NotMultiple("67108865".into()))),
            ("1PiB", Ok(MAX_SIZE)),
            ("1025TiB", Err(SizeError::TooLarge("1025TiB".into()))),
            ("1024P", Err(SizeError::TooLarge("1024P".into()))),
            (
                "",
                Err(SizeError::Parse(berth_units::UnitError::Size("".into()))),
            ),
            (
                "ten",
                Err(SizeError::Parse(berth_units::UnitError::Size("ten".into()))),
            ),
            (
                "1xb",
                Err(SizeError::Parse(berth_units::UnitError::Size("1xb".into()))),
            ),
            (
                "1.G",
                Err(SizeError::Parse(berth_units::UnitError::Size("1.G".into()))),
            ),
            (
                "-1G",
                Err(SizeError::Parse(berth_units::UnitError::Size("-1G".into()))),
            ),
            (
                "99999999999999T",
                Err(SizeError::Parse(berth_units::UnitError::SizeRange(
                    "99999999999999T".into(),
                ))),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input), want, "{input:?}");
        }
    }

    /// A long fraction once overflowed the parser and was stored as a whole 64 GiB.
    #[test]
    fn a_fraction_that_is_not_whole_bytes_is_refused() {
        assert!(parse("64.00000000316912650057057350374175801344G").is_err());
        assert!(parse("64.0000000001G").is_err());
        assert_eq!(parse("64.5G"), Ok(129 << 29));
    }

    #[test]
    fn plain_amounts_skip_the_dataset_rules() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(
            parse_bytes("ten"),
            Err(SizeError::Parse(berth_units::UnitError::Size("ten".into())))
        );
        assert_eq!(parse("4MiB"), Err(SizeError::TooSmall("4MiB".into())));
    }
}
