//! Berth's service labels (`berth.*`), in the style Traefik users know: the policy that opts a
//! service into stateful placement, failover modes, ordering and spreading.
//!
//! Unknown `berth.*` labels are an error, not ignored: a typo such as `berth.failvoer=manual`
//! silently falling back to `move` would move a database its operator meant to pin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::dataset::Backend;

pub const STATEFUL: &str = "berth.stateful";
pub const VOLUME: &str = "berth.volume";
pub const FAILOVER: &str = "berth.failover";
pub const DEPENDS_ON: &str = "berth.depends-on";
pub const MAX_UNAVAILABLE: &str = "berth.max-unavailable";
pub const ANTI_AFFINITY: &str = "berth.anti-affinity";
pub const BACKEND: &str = "berth.backend";
pub const RECREATE_GRACE: &str = "berth.recreate-grace";
pub const STRATEGY: &str = "berth.strategy";
pub const TOPOLOGY_SPREAD: &str = "berth.topology-spread";
pub const REPLICAS: &str = "berth.replicas";
pub const PIN: &str = "berth.pin";

/// Every label Berth reads, for the "unknown label" message.
pub const KNOWN: &[&str] = &[
    STATEFUL,
    VOLUME,
    FAILOVER,
    DEPENDS_ON,
    MAX_UNAVAILABLE,
    ANTI_AFFINITY,
    BACKEND,
    RECREATE_GRACE,
    STRATEGY,
    TOPOLOGY_SPREAD,
    REPLICAS,
    PIN,
];

/// The slot placeholder in `berth.volume`; Swarm's own template form is accepted too so the
/// same string can be used in `--mount source=`.
pub const SLOT_PLACEHOLDER: &str = "{slot}";
const SWARM_SLOT_PLACEHOLDER: &str = "{{.Task.Slot}}";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LabelError {
    #[error("unknown label `{label}` (known: {})", KNOWN.join(", "))]
    Unknown { label: String },
    #[error("label `{label}`: invalid value `{value}`: {why}")]
    Invalid {
        label: &'static str,
        value: String,
        why: String,
    },
    #[error("label `{label}` needs `{STATEFUL}=true`")]
    NeedsStateful { label: &'static str },
    #[error("`{STATEFUL}=true` needs `{VOLUME}=<name template with {SLOT_PLACEHOLDER}>`")]
    MissingVolume,
}

/// What to do with a slot whose node is lost.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// Fence the dataset and move it with the task (shared or replicated storage).
    #[default]
    Move,
    /// The database replicates itself: after a grace period, a fresh dataset on a new node.
    Recreate,
    /// Wait for an operator, like a Kubernetes StatefulSet.
    Manual,
}

impl FailoverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverMode::Move => "move",
            FailoverMode::Recreate => "recreate",
            FailoverMode::Manual => "manual",
        }
    }
}

/// How feasible nodes are ranked. `Spread` is Swarm's own order and the default.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Spread,
    LeastAllocated,
    Binpack,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::LeastAllocated => "least-allocated",
            Strategy::Binpack => "binpack",
        }
    }
}

/// A hard spread over a label's values: placing must keep `count(domain) - min(count) <=
/// max_skew`, like Kubernetes' `topologySpreadConstraints` with `DoNotSchedule`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopologySpread {
    /// `node.labels.<k>` or `engine.labels.<k>`, as a Swarm spread descriptor.
    pub key: String,
    pub max_skew: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stateful {
    /// Volume name template containing `{slot}`.
    pub volume: String,
    pub failover: FailoverMode,
    /// Storage for datasets Berth creates for this service.
    pub backend: Backend,
    /// How long a `recreate` service waits for its node before starting a fresh member.
    pub recreate_grace_secs: u64,
    /// `berth.replicas`: the slot count of a template that `berth run` runs as one Swarm
    /// service per slot (the template itself has 0 replicas, so a `docker stack deploy` of it
    /// starts no task). `None`: the service's own replica count.
    #[serde(default)]
    pub replicas: Option<u64>,
}

impl Stateful {
    /// The dataset (volume) name of one slot.
    pub fn volume_for_slot(&self, slot: u64) -> String {
        self.volume.replace(SLOT_PLACEHOLDER, &slot.to_string())
    }
}

/// Which slots of a stateful service the rescheduling planner leaves where they are
/// (`berth.pin`): failover still moves a pinned slot off a lost or drained node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    #[default]
    None,
    /// `berth.pin=true`: every slot.
    All,
    /// `berth.pin=1,3`: these slots, sorted, no duplicates.
    Slots(Vec<u64>),
}

impl Pin {
    pub fn pins(&self, slot: u64) -> bool {
        match self {
            Pin::None => false,
            Pin::All => true,
            Pin::Slots(s) => s.binary_search(&slot).is_ok(),
        }
    }
}

/// A service's Berth policy. A service without `berth.*` labels gets `Policy::default()`,
/// which is exactly Swarm's behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub stateful: Option<Stateful>,
    /// Service names this one must fail over and start after.
    pub depends_on: Vec<String>,
    /// Slots that may be down at once during a planned move (drain); at least 1.
    pub max_unavailable: u32,
    /// At most one replica of this service per node.
    pub anti_affinity: bool,
    pub strategy: Strategy,
    pub topology_spread: Vec<TopologySpread>,
    /// `berth.pin`: slots rescheduling never moves.
    #[serde(default)]
    pub pin: Pin,
}

pub const DEFAULT_RECREATE_GRACE_SECS: u64 = 30;

impl Policy {
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Policy, LabelError> {
        for key in labels.keys() {
            if key.starts_with("berth.") && !KNOWN.contains(&key.as_str()) {
                return Err(LabelError::Unknown { label: key.clone() });
            }
        }
        let get = |k: &str| labels.get(k).map(|v| v.trim());

        let stateful_on = match get(STATEFUL) {
            None => false,
            Some(v) => parse_bool(STATEFUL, v)?,
        };
        let stateful = if stateful_on {
            let volume = get(VOLUME).ok_or(LabelError::MissingVolume)?;
            let volume = volume.replace(SWARM_SLOT_PLACEHOLDER, SLOT_PLACEHOLDER);
            if !volume.contains(SLOT_PLACEHOLDER) {
                return Err(LabelError::Invalid {
                    label: VOLUME,
                    value: volume,
                    why: format!(
                        "must contain {SLOT_PLACEHOLDER} so each slot gets its own dataset"
                    ),
                });
            }
            let sample = volume.replace(SLOT_PLACEHOLDER, "1");
            if let Err(why) = check_volume_name(&sample) {
                return Err(LabelError::Invalid {
                    label: VOLUME,
                    value: volume,
                    why,
                });
            }
            let failover = match get(FAILOVER) {
                None => FailoverMode::default(),
                Some("move") => FailoverMode::Move,
                Some("recreate") => FailoverMode::Recreate,
                Some("manual") => FailoverMode::Manual,
                Some(v) => return Err(invalid(FAILOVER, v, "expected move, recreate or manual")),
            };
            let backend = match get(BACKEND) {
                None => Backend::default(),
                Some("local") => Backend::Local,
                Some("shared") => Backend::Shared,
                Some("replicated") => Backend::Replicated,
                Some(v) => {
                    return Err(invalid(BACKEND, v, "expected local, shared or replicated"));
                }
            };
            let recreate_grace_secs = match get(RECREATE_GRACE) {
                None => DEFAULT_RECREATE_GRACE_SECS,
                Some(v) => {
                    parse_duration_secs(v).map_err(|why| invalid(RECREATE_GRACE, v, &why))?
                }
            };
            let replicas = match get(REPLICAS) {
                None => None,
                Some(v) => Some(
                    v.parse::<u64>()
                        .map_err(|_| invalid(REPLICAS, v, "expected a whole number of slots"))?,
                ),
            };
            Some(Stateful {
                volume,
                failover,
                backend,
                recreate_grace_secs,
                replicas,
            })
        } else {
            for label in [VOLUME, FAILOVER, BACKEND, RECREATE_GRACE, REPLICAS] {
                if labels.contains_key(label) {
                    return Err(LabelError::NeedsStateful { label });
                }
            }
            None
        };

        let depends_on = match get(DEPENDS_ON) {
            None => Vec::new(),
            Some(v) => {
                let mut deps: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if deps.is_empty() {
                    return Err(invalid(
                        DEPENDS_ON,
                        v,
                        "expected service names separated by commas",
                    ));
                }
                deps.sort();
                deps.dedup();
                deps
            }
        };
        let max_unavailable = match get(MAX_UNAVAILABLE) {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(invalid(MAX_UNAVAILABLE, v, "expected a whole number >= 1")),
            },
        };
        let anti_affinity = match get(ANTI_AFFINITY) {
            None => stateful.is_some(),
            Some(v) => parse_bool(ANTI_AFFINITY, v)?,
        };
        let strategy = match get(STRATEGY) {
            None => Strategy::default(),
            Some("spread") => Strategy::Spread,
            Some("least-allocated") => Strategy::LeastAllocated,
            Some("binpack") => Strategy::Binpack,
            Some(v) => {
                return Err(invalid(
                    STRATEGY,
                    v,
                    "expected spread, least-allocated or binpack",
                ));
            }
        };
        let topology_spread = match get(TOPOLOGY_SPREAD) {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|item| {
                    parse_topology(item.trim()).map_err(|why| invalid(TOPOLOGY_SPREAD, v, &why))
                })
                .collect::<Result<_, _>>()?,
        };
        let pin = match get(PIN) {
            None | Some("false") => Pin::None,
            Some("true") => Pin::All,
            Some(v) => {
                let mut slots = v
                    .split(',')
                    .map(|x| x.trim().parse::<u64>().ok().filter(|n| *n >= 1))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(|| invalid(PIN, v, "expected true, false or slot numbers (1,3)"))?;
                slots.sort_unstable();
                slots.dedup();
                Pin::Slots(slots)
            }
        };
        if pin != Pin::None && stateful.is_none() {
            return Err(LabelError::NeedsStateful { label: PIN });
        }
        Ok(Policy {
            stateful,
            depends_on,
            max_unavailable,
            anti_affinity,
            strategy,
            topology_spread,
            pin,
        })
    }
}

fn invalid(label: &'static str, value: &str, why: &str) -> LabelError {
    LabelError::Invalid {
        label,
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn parse_bool(label: &'static str, v: &str) -> Result<bool, LabelError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(label, v, "expected true or false")),
    }
}

fn parse_topology(item: &str) -> Result<TopologySpread, String> {
    let (key, skew) = item.rsplit_once(':').ok_or_else(|| {
        format!("`{item}`: expected <node.labels.KEY|engine.labels.KEY>:<max skew>")
    })?;
    let lower = key.to_ascii_lowercase();
    let has_prefix = ["node.labels.", "engine.labels."]
        .iter()
        .any(|p| lower.starts_with(p) && lower.len() > p.len());
    if !has_prefix {
        return Err(format!(
            "`{key}`: the key must be node.labels.<k> or engine.labels.<k>"
        ));
    }
    let max_skew = match skew.parse::<u32>() {
        Ok(n) if n >= 1 => n,
        _ => return Err(format!("`{skew}`: max skew must be a whole number >= 1")),
    };
    Ok(TopologySpread {
        key: key.to_string(),
        max_skew,
    })
}

/// Accepts `90`, `90s`, `5m`, `1h`, `1h30m`: Berth's one reading of durations (`berth_units`), in
/// whole seconds.
pub fn parse_duration_secs(v: &str) -> Result<u64, String> {
    berth_units::parse_duration_secs(v).map_err(|e| e.to_string())
}

/// Docker's volume name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), checked early so a bad
/// template fails at plan time, not on the node.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok_first = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
    let ok_rest = bytes[1..]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.len() < 2 || name.len() > 255 || !ok_first || !ok_rest || name.contains("..") {
        return Err(format!(
            "`{name}` is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+, no `..`, at most 255 bytes)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unlabelled_service_gets_swarm_default() {
        let p = Policy::from_labels(&labels(&[("com.example", "x")])).unwrap();
        assert_eq!(
            p,
            Policy {
                max_unavailable: 1,
                ..Policy::default()
            }
        );
        assert!(!p.anti_affinity);
    }

    #[test]
    fn stateful_mongo() {
        let p = Policy::from_labels(&labels(&[
            (STATEFUL, "true"),
            (VOLUME, "mongo-data-{{.Task.Slot}}"),
            (FAILOVER, "recreate"),
            (DEPENDS_ON, "config, dns"),
            (MAX_UNAVAILABLE, "1"),
            (TOPOLOGY_SPREAD, "node.labels.zone:1"),
        ]))
        .unwrap();
        let s = p.stateful.as_ref().unwrap();
        assert_eq!(s.volume_for_slot(2), "mongo-data-2");
        assert_eq!(s.failover, FailoverMode::Recreate);
        assert_eq!(s.recreate_grace_secs, DEFAULT_RECREATE_GRACE_SECS);
        assert_eq!(p.depends_on, vec!["config", "dns"]);
        assert!(
            p.anti_affinity,
            "stateful services spread replicas by default"
        );
        assert_eq!(p.topology_spread[0].max_skew, 1);
    }

    #[test]
    fn errors_name_the_label() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("berth.failvoer", "manual")],
                "unknown label `berth.failvoer`",
            ),
            (
                &[(STATEFUL, "yes")],
                "label `berth.stateful`: invalid value `yes`",
            ),
            (&[(STATEFUL, "true")], "needs `berth.volume="),
            (
                &[(STATEFUL, "true"), (VOLUME, "data")],
                "must contain {slot}",
            ),
            (
                &[(STATEFUL, "true"), (VOLUME, "../{slot}")],
                "not a valid volume name",
            ),
            (
                &[(FAILOVER, "move")],
                "label `berth.failover` needs `berth.stateful=true`",
            ),
            (&[(MAX_UNAVAILABLE, "0")], "whole number >= 1"),
            (&[(TOPOLOGY_SPREAD, "zone:1")], "node.labels.<k>"),
            (
                &[(STRATEGY, "random")],
                "expected spread, least-allocated or binpack",
            ),
        ];
        for (input, want) in cases {
            let err = Policy::from_labels(&labels(input)).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn pin_takes_all_or_slots() {
        let base = [(STATEFUL, "true"), (VOLUME, "db-{slot}")];
        let with = |v: &str| {
            let mut l = labels(&base);
            l.insert(PIN.into(), v.into());
            Policy::from_labels(&l)
        };
        assert_eq!(with("true").unwrap().pin, Pin::All);
        assert_eq!(with("false").unwrap().pin, Pin::None);
        let p = with("3, 1,3").unwrap().pin;
        assert_eq!(p, Pin::Slots(vec![1, 3]));
        assert!(p.pins(3) && !p.pins(2));
        assert!(with("0").unwrap_err().to_string().contains("slot numbers"));
        let err = Policy::from_labels(&labels(&[(PIN, "true")])).unwrap_err();
        assert!(
            err.to_string().contains("needs `berth.stateful=true`"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("5m"), Ok(300));
        assert!(parse_duration_secs("5x").is_err());
        assert!(parse_duration_secs("").is_err());
    }
}
