//! One folder per plugin, as kube-scheduler's `framework/plugins/<name>/`. Filters, in the
//! order the default profile runs them: `node_ready`, `resources`, `engine_plugins`,
//! `constraints`, `platform`, `host_port`, `max_replicas` (Swarm's own pipeline), then Berth's
//! `volume_locality` and `replica_anti_affinity`. Scores: `spread` (Swarm's order),
//! `least_allocated`, `binpack`. Spread levels: `preference_spread` (Swarm's placement
//! preferences), `topology_spread` (hard max skew).

pub mod binpack;
pub mod constraints;
pub mod engine_plugins;
pub mod host_port;
pub mod least_allocated;
pub mod max_replicas;
pub mod node_ready;
pub mod platform;
pub mod preference_spread;
pub mod replica_anti_affinity;
pub mod resources;
pub mod spread;
pub mod topology_spread;
pub mod volume_locality;

#[cfg(test)]
pub(crate) mod test_support;
