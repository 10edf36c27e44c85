//! Docker volume names become directory keys and Flocker metadata, so anything that could
//! escape a directory or confuse a log line is refused before it reaches a backend.

/// Why a volume name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("volume name is empty")]
    Empty,
    #[error("volume name is {0} bytes; the limit is 255")]
    TooLong(usize),
    #[error("volume name {0:?} contains '/'")]
    Slash(String),
    #[error("volume name {0:?} contains '..'")]
    DotDot(String),
    #[error("volume name contains a NUL or control character")]
    Control,
}

/// Accepts a name only if it is safe as a single path component and a log field.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 255 {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if name.contains('/') {
        return Err(NameError::Slash(name.to_string()));
    }
    if name.contains("..") || name == "." {
        return Err(NameError::DotDot(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let long = "a".repeat(256);
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("v1", Ok(())),
            ("data-1.db_x", Ok(())),
            (&long, Err(NameError::TooLong(256))),
            ("", Err(NameError::Empty)),
            ("a/b", Err(NameError::Slash("a/b".into()))),
            ("..", Err(NameError::DotDot("..".into()))),
            ("a..b", Err(NameError::DotDot("a..b".into()))),
            ("a\0b", Err(NameError::Control)),
            ("a\nb", Err(NameError::Control)),
            ("a\x1bb", Err(NameError::Control)),
        ];
        for (input, want) in cases {
            assert_eq!(&validate(input), want, "{input:?}");
        }
        assert!(validate(&"a".repeat(255)).is_ok());
    }
}
