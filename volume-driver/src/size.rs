//! Flocker's size forms (`10g`, `10GB`, `10GiB`, `512mib`, plain bytes), all binary multiples,
//! checked against the dataset API's rules (at least 64 MiB, a multiple of 1024).

/// Why a size option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("size {0:?} does not parse (use e.g. 10GiB, 10g, 512MiB or a byte count)")]
    Parse(String),
    #[error("size {0:?} is below the 64 MiB minimum")]
    TooSmall(String),
    #[error("size {0:?} is not a multiple of 1024 bytes")]
    NotMultiple(String),
}

/// The smallest `maximum_size` the Flocker API accepts.
pub const MIN_SIZE: u64 = 64 * 1024 * 1024;

/// Parses a Flocker size expression into a dataset size in bytes (the API's rules applied).
pub fn parse(expr: &str) -> Result<u64, SizeError> {
    let bytes = parse_bytes(expr)?;
    if bytes < MIN_SIZE {
        return Err(SizeError::TooSmall(expr.to_string()));
    }
    if !bytes.is_multiple_of(1024) {
        return Err(SizeError::NotMultiple(expr.to_string()));
    }
    Ok(bytes)
}

/// Parses a size expression into bytes with no dataset rules: for amounts that are not dataset
/// sizes, such as a transfer rate. A fraction must still come out a whole number of bytes.
pub fn parse_bytes(expr: &str) -> Result<u64, SizeError> {
    let bad = || SizeError::Parse(expr.to_string());
    let split = expr
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(expr.len());
    let (num, unit) = expr.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| bad())?;
    let mut bytes = int
        .checked_shl(shift)
        .filter(|v| v >> shift == int)
        .ok_or_else(bad)?;
    if !frac.is_empty() {
        let digits: u32 = u32::try_from(frac.len()).map_err(|_| bad())?;
        let den = 10u128.checked_pow(digits).ok_or_else(bad)?;
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let part = (f << shift) / den;
        if !(f << shift).is_multiple_of(den) {
            return Err(SizeError::NotMultiple(expr.to_string()));
        }
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| bad())?)
            .ok_or_else(bad)?;
    }
    Ok(bytes)
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
            ("", Err(SizeError::Parse("".into()))),
            ("ten", Err(SizeError::Parse("ten".into()))),
            ("1xb", Err(SizeError::Parse("1xb".into()))),
            ("1.G", Err(SizeError::Parse("1.G".into()))),
            ("-1G", Err(SizeError::Parse("-1G".into()))),
            (
                "99999999999999T",
                Err(SizeError::Parse("99999999999999T".into())),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input), want, "{input:?}");
        }
    }

    #[test]
    fn plain_amounts_skip_the_dataset_rules() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("ten"), Err(SizeError::Parse("ten".into())));
        assert_eq!(parse("4MiB"), Err(SizeError::TooSmall("4MiB".into())));
    }
}
