//! The scheduling framework: extension points in the manner of kube-scheduler, sized for Swarm.
//!
//! A placement cycle runs, for one batch of identical tasks (one service, or one stateful slot):
//! 1. **pre-filter**: each filter plugin parses what it needs once into the [`CycleState`], or
//!    says it does not apply (`Skip`), or rejects the whole batch (e.g. a slot whose dataset
//!    waits for an operator);
//! 2. **filter**: each node runs the filters in registry order and stops at the first failure,
//!    whose reason is counted (Swarm's pipeline and kube's `FitError` both do this);
//! 3. **score** (+ normalise): node-local scores, weighted and summed, raw scores as tie-breaks,
//!    then the node ID;
//! 4. **spread levels**: preference spread and topology spread choose a label domain first, as
//!    Swarm's decision tree does;
//! 5. **reserve**: the chosen node's bookkeeping is updated (resources, ports, dataset primary).
//!
//! Filters are either `Static` (depend only on the node and the task spec) or `Monotone` (depend
//! on what is already placed, and once failing stay failing as tasks are added). That split is
//! what lets a batch of 100k tasks be placed in O(T log N): static filters run once per node,
//! monotone ones only on the node about to be chosen.

mod cycle_state;
mod plugin;
mod registry;
mod status;

pub use cycle_state::CycleState;
pub use plugin::{
    DatasetHome, FilterKind, FilterPlugin, MAX_NODE_SCORE, Plugin, ReservePlugin, ScorePlugin,
    SlotDataset, SpreadLevel, SpreadPlugin, TaskSpec,
};
pub use registry::{MAX_SCORERS, Profile};
pub use status::{Code, Reason, Status};
