//! The primary side's ship settings and per-(dataset, standby) locks, which the agent holds
//! and `replica` uses: apart from `replica`, so the agent needs nothing of the ship itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a mounted `replicated` dataset is shipped when `--ship-interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The primary side's settings, and one lock per (dataset, standby): at most one ship to a
/// standby at a time, and a standby that hangs holds up only its own ships.
#[derive(Debug, Clone)]
pub struct Shipper {
    pub interval: Duration,
    locks: Arc<Mutex<PairLocks>>,
}

/// One lock per (dataset ID, standby node).
type PairLocks = BTreeMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

impl Default for Shipper {
    fn default() -> Shipper {
        Shipper::new(DEFAULT_INTERVAL)
    }
}

impl Shipper {
    pub fn new(interval: Duration) -> Shipper {
        Shipper {
            interval,
            locks: Arc::default(),
        }
    }

    pub(crate) fn lock(&self, id: &str, standby: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        l.entry((id.to_string(), standby.to_string()))
            .or_default()
            .clone()
    }
}
