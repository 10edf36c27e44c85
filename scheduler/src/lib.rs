//! Berth's placement engine.
//!
//! A tour, in data-flow order:
//! - [`model`]: the cluster (nodes, services, tasks, datasets) and Berth's `berth.*` policy.
//! - `ingest`: `docker inspect` JSON and the compact TOML form → [`model::Cluster`].
//! - `constraint`: Swarm's constraint syntax, parsed and matched byte-for-byte like Swarm.
//! - `framework` and `plugins`: the kube-scheduler-style pipeline (pre-filter, filter, score,
//!   reserve), one plugin per folder.
//! - `schedule`: places every missing task of a cluster, service by service.
//! - `explain`: why a task is pending, or why it went where it went.
//! - `failover`: a node is lost, drained or back — the ordered plan that follows.
//! - `rebalance`: which running stateful slots to move, and where, once the cluster is lopsided.
//!
//! Architecture invariant: this library does no I/O, spawns nothing and reads no clock. The
//! daemon, the CLI and the simulator all call the same pure functions.

/// Hash maps and sets for lookups only: a fast hash with a fixed seed. Never iterated where
/// the order could decide anything.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

pub mod constraint;
pub mod dependency;
pub mod executor;
pub mod explain;
pub mod failover;
pub mod framework;
pub mod ingest;
pub mod model;
pub mod plugins;
pub mod rebalance;
pub mod replan;
pub mod rollout;
pub mod schedule;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
