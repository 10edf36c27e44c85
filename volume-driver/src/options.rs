//! The `-o` options a volume accepts. Unknown keys are refused rather than ignored, so a typo
//! never silently produces a volume with default settings.

use std::collections::BTreeMap;

/// Metadata keys under which options are stored in the dataset configuration.
pub const META_NAME: &str = "name";
pub const META_PROFILE: &str = "clusterhq:flocker:profile";
pub const META_BACKEND: &str = "berth:backend";

/// Where a dataset's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A directory on the primary's data root; a move copies it.
    Local,
    /// A directory on storage every node sees; a move only re-points.
    Shared,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Shared => "shared",
        }
    }

    /// The backend recorded in a dataset's metadata (absent means local).
    pub fn from_metadata(meta: &BTreeMap<String, String>) -> BackendKind {
        match meta.get(META_BACKEND).map(String::as_str) {
            Some("shared") => BackendKind::Shared,
            _ => BackendKind::Local,
        }
    }
}

/// Validated volume options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    pub size: Option<u64>,
    pub profile: Option<String>,
    pub backend: BackendKind,
}

/// Why an option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown option {0:?} (known: size, profile, backend)")]
    Unknown(String),
    #[error(transparent)]
    Size(#[from] crate::size::SizeError),
    #[error("backend {0:?} is not one of local, shared")]
    Backend(String),
    #[error("profile {0:?} must be 1-64 characters of [A-Za-z0-9_-]")]
    Profile(String),
}

/// Parses Docker's `Opts` map.
pub fn parse(opts: &BTreeMap<String, String>) -> Result<VolumeOptions, OptionError> {
    let mut out = VolumeOptions {
        size: None,
        profile: None,
        backend: BackendKind::Local,
    };
    for (k, v) in opts {
        match k.as_str() {
            "size" => out.size = Some(crate::size::parse(v)?),
            "profile" => {
                let ok = !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(OptionError::Profile(v.clone()));
                }
                out.profile = Some(v.clone());
            }
            "backend" => {
                out.backend = match v.as_str() {
                    "local" => BackendKind::Local,
                    "shared" => BackendKind::Shared,
                    _ => return Err(OptionError::Backend(v.clone())),
                }
            }
            _ => return Err(OptionError::Unknown(k.clone())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        assert_eq!(
            parse(&m(&[
                ("size", "1GiB"),
                ("profile", "gold"),
                ("backend", "shared")
            ])),
            Ok(VolumeOptions {
                size: Some(1 << 30),
                profile: Some("gold".into()),
                backend: BackendKind::Shared
            })
        );
        assert_eq!(
            parse(&m(&[("colour", "x")])),
            Err(OptionError::Unknown("colour".into()))
        );
        assert_eq!(
            parse(&m(&[("backend", "nfs")])),
            Err(OptionError::Backend("nfs".into()))
        );
        assert_eq!(
            parse(&m(&[("profile", "a b")])),
            Err(OptionError::Profile("a b".into()))
        );
        assert!(matches!(
            parse(&m(&[("size", "huge")])),
            Err(OptionError::Size(_))
        ));
    }
}
