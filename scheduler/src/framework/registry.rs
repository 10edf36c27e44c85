//! The plugin lists, in order. Cheap, decisive filters first: the first failure is what gets
//! counted, and Swarm's own order (ready, resources, plugins, constraints, platform, host
//! ports, max replicas) is kept so pending reasons read the same as Swarm's.

use std::sync::OnceLock;

use crate::model::Strategy;
use crate::plugins;

use super::{FilterPlugin, ReservePlugin, ScorePlugin, SpreadPlugin};

/// Score plugins per profile, bounded so a node's ranking key is a fixed-size array.
pub const MAX_SCORERS: usize = 3;

pub struct Profile {
    pub strategy: Strategy,
    pub filters: Vec<Box<dyn FilterPlugin>>,
    /// `(plugin, weight)`. A weight of 0 makes a plugin a pure tie-break.
    pub scorers: Vec<(Box<dyn ScorePlugin>, u32)>,
    pub spreads: Vec<Box<dyn SpreadPlugin>>,
    pub reserves: Vec<Box<dyn ReservePlugin>>,
}

impl Profile {
    /// The shared profile of a strategy, built once per process (plugins are stateless).
    pub fn of(strategy: Strategy) -> &'static Profile {
        static PROFILES: OnceLock<[Profile; 3]> = OnceLock::new();
        let all = PROFILES.get_or_init(|| {
            [
                Profile::for_strategy(Strategy::Spread),
                Profile::for_strategy(Strategy::LeastAllocated),
                Profile::for_strategy(Strategy::Binpack),
            ]
        });
        match strategy {
            Strategy::Spread => &all[0],
            Strategy::LeastAllocated => &all[1],
            Strategy::Binpack => &all[2],
        }
    }

    pub fn for_strategy(strategy: Strategy) -> Profile {
        let filters: Vec<Box<dyn FilterPlugin>> = vec![
            Box::new(plugins::node_ready::NodeReady),
            Box::new(plugins::resources::Resources),
            Box::new(plugins::engine_plugins::EnginePlugins),
            Box::new(plugins::constraints::Constraints),
            Box::new(plugins::platform::Platform),
            Box::new(plugins::host_port::HostPort),
            Box::new(plugins::max_replicas::MaxReplicas),
            Box::new(plugins::volume_locality::VolumeLocality),
            Box::new(plugins::replica_anti_affinity::ReplicaAntiAffinity),
        ];
        let spread: Box<dyn ScorePlugin> = Box::new(plugins::spread::Spread);
        let scorers: Vec<(Box<dyn ScorePlugin>, u32)> = match strategy {
            Strategy::Spread => vec![(spread, 1)],
            Strategy::LeastAllocated => {
                vec![
                    (Box::new(plugins::least_allocated::LeastAllocated), 1),
                    (spread, 0),
                ]
            }
            Strategy::Binpack => vec![(Box::new(plugins::binpack::Binpack), 1), (spread, 0)],
        };
        assert!(scorers.len() <= MAX_SCORERS, "raise MAX_SCORERS");
        Profile {
            strategy,
            filters,
            scorers,
            spreads: vec![
                Box::new(plugins::preference_spread::PreferenceSpread),
                Box::new(plugins::topology_spread::TopologySpread),
            ],
            reserves: vec![
                Box::new(plugins::resources::Resources),
                Box::new(plugins::host_port::HostPort),
            ],
        }
    }
}
