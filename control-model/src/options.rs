//! The `-o` options a volume accepts. Unknown keys are refused rather than ignored, so a typo
//! never silently produces a volume with default settings.

use std::collections::BTreeMap;

/// Metadata keys under which options are stored in the dataset configuration.
pub const META_NAME: &str = "name";
pub const META_PROFILE: &str = "clusterhq:flocker:profile";
pub const META_BACKEND: &str = "berth:backend";
/// How many copies a `replicated` dataset keeps (the primary's plus standbys).
pub const META_REPLICAS: &str = "berth:replicas";

/// Copies of a `replicated` dataset when `-o replicas` is not given.
pub const DEFAULT_REPLICAS: u32 = 2;
/// Most copies a `replicated` dataset may ask for: every standby is shipped to on every pass.
pub const MAX_REPLICAS: u32 = 5;

/// Where a dataset's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A directory on the primary's data root; a move copies it.
    Local,
    /// A directory on storage every node sees; a move only re-points.
    Shared,
    /// A `local` copy on the primary, shipped continuously to standby nodes' copies; a failover
    /// promotes a standby.
    Replicated,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Shared => "shared",
            BackendKind::Replicated => "replicated",
        }
    }

    /// The backend recorded in a dataset's metadata (absent means local).
    pub fn from_metadata(meta: &BTreeMap<String, String>) -> BackendKind {
        BackendKind::from_str_or_local(meta.get(META_BACKEND).map_or("", String::as_str))
    }

    /// The backend named `s` (as `as_str` writes it); anything else is `local`, the default.
    pub fn from_str_or_local(s: &str) -> BackendKind {
        match s {
            "shared" => BackendKind::Shared,
            "replicated" => BackendKind::Replicated,
            _ => BackendKind::Local,
        }
    }

    /// Whether the primary's bytes live in its own data root (`local`, `replicated`).
    pub fn is_node_local(self) -> bool {
        self != BackendKind::Shared
    }
}

/// The copies a dataset keeps (1 unless it is `replicated`).
pub fn replicas_of(meta: &BTreeMap<String, String>) -> u32 {
    match BackendKind::from_metadata(meta) {
        BackendKind::Replicated => meta
            .get(META_REPLICAS)
            .and_then(|r| r.parse().ok())
            .unwrap_or(DEFAULT_REPLICAS),
        _ => 1,
    }
}

/// Validated volume options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    pub size: Option<u64>,
    pub profile: Option<String>,
    pub backend: BackendKind,
    /// Copies kept by a `replicated` dataset (`None` for the other backends).
    pub replicas: Option<u32>,
}

/// Why an option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown option {0:?} (known: size, profile, backend, replicas)")]
    Unknown(String),
    #[error(transparent)]
    Size(#[from] crate::size::SizeError),
    #[error("backend {0:?} is not one of local, shared, replicated")]
    Backend(String),
    #[error("replicas {0:?} must be a whole number from 2 to {MAX_REPLICAS}")]
    Replicas(String),
    #[error("replicas applies only to backend=replicated")]
    ReplicasWithoutReplicated,
    #[error("profile {0:?} must be 1-64 characters of [A-Za-z0-9_-]")]
    Profile(String),
}

/// Parses Docker's `Opts` map.
pub fn parse(opts: &BTreeMap<String, String>) -> Result<VolumeOptions, OptionError> {
    let mut out = VolumeOptions {
        size: None,
        profile: None,
        backend: BackendKind::Local,
        replicas: None,
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
                    "replicated" => BackendKind::Replicated,
                    _ => return Err(OptionError::Backend(v.clone())),
                }
            }
            "replicas" => match v.parse::<u32>() {
                Ok(n) if (2..=MAX_REPLICAS).contains(&n) => out.replicas = Some(n),
                _ => return Err(OptionError::Replicas(v.clone())),
            },
            _ => return Err(OptionError::Unknown(k.clone())),
        }
    }
    match out.backend {
        BackendKind::Replicated => {
            out.replicas = Some(out.replicas.unwrap_or(DEFAULT_REPLICAS));
        }
        _ if out.replicas.is_some() => return Err(OptionError::ReplicasWithoutReplicated),
        _ => {}
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
                backend: BackendKind::Shared,
                replicas: None,
            })
        );
        assert_eq!(
            parse(&m(&[("backend", "replicated")])).map(|o| o.replicas),
            Ok(Some(DEFAULT_REPLICAS))
        );
        assert_eq!(
            parse(&m(&[("backend", "replicated"), ("replicas", "3")])).map(|o| o.replicas),
            Ok(Some(3))
        );
        for bad in ["1", "6", "two", "-2", ""] {
            assert_eq!(
                parse(&m(&[("backend", "replicated"), ("replicas", bad)])),
                Err(OptionError::Replicas(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&m(&[("replicas", "2")])),
            Err(OptionError::ReplicasWithoutReplicated)
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
