//! The rescheduling planner kept between node events: a [`RebalanceIndex`] holds the cluster
//! with its index, kept tasks and loads (a [`Replanner`]), so the check that can run after
//! every node event — is any move worth proposing? — costs the event's delta and a look at
//! each stateful slot, not a placement run from scratch. (The daemon's automatic mode does
//! not use it yet: it plans from scratch once per quiet window.)
//!
//! Invariant (property-tested in `tests.rs`): [`RebalanceIndex::plan`] equals
//! [`super::plan_rebalance`] of [`RebalanceIndex::cluster`], and
//! [`RebalanceIndex::worth_moving`] equals that plan having a move.

use crate::model::{Cluster, Node, NodeId};
use crate::replan::{Delta, ReplanError, Replanner};

use super::{Budget, Facts, RebalancePlan, Work};

/// A change to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node stopped answering.
    Down(NodeId),
    /// The node is ready again.
    Back(NodeId),
    /// A node joined.
    Added(Node),
    /// A known node changed (labels, availability, state): the node as it is now.
    Changed(Node),
}

/// A cluster and the rescheduling planner's derived state, kept up to date event by event.
pub struct RebalanceIndex {
    replanner: Replanner,
    /// The slots' dataset facts: a node lost or back leaves them as they are.
    facts: Facts,
}

impl RebalanceIndex {
    /// Checks, indexes and places `cluster`, which the planner keeps.
    pub fn new(cluster: Cluster) -> Result<RebalanceIndex, ReplanError> {
        let replanner = Replanner::new(cluster)?;
        let (ix, ..) = replanner.state();
        let facts = Facts::new(replanner.cluster(), ix);
        Ok(RebalanceIndex { replanner, facts })
    }

    /// The cluster as the events left it.
    pub fn cluster(&self) -> &Cluster {
        self.replanner.cluster()
    }

    /// Applies one node event. A node lost or back is a delta on the kept state; a node
    /// added or changed shifts the dense node order or a node's domains, so those rebuild the
    /// state from the changed cluster (as costly as a full plan). On an error the state is
    /// left as it was.
    pub fn apply(&mut self, event: NodeEvent) -> Result<(), ReplanError> {
        match event {
            NodeEvent::Down(id) => self.replanner.apply(Delta::NodeDown(id)).map(drop),
            NodeEvent::Back(id) => self.replanner.apply(Delta::NodeBack(id)).map(drop),
            NodeEvent::Added(node) => {
                let mut cluster = self.cluster().clone();
                cluster.nodes.push(node);
                *self = RebalanceIndex::new(cluster)?;
                Ok(())
            }
            NodeEvent::Changed(node) => {
                let mut cluster = self.cluster().clone();
                let Some(slot) = cluster.nodes.iter_mut().find(|n| n.id == node.id) else {
                    return Err(ReplanError::UnknownNode(node.id));
                };
                *slot = node;
                *self = RebalanceIndex::new(cluster)?;
                Ok(())
            }
        }
    }

    fn work(&self) -> Work<'_> {
        let cluster = self.replanner.cluster();
        let (ix, kept, loads, plans) = self.replanner.state();
        let mut new = Vec::new();
        for (s, sp) in plans.iter().enumerate() {
            if ix.policies[s].stateful.is_some() {
                new.extend(sp.placed.iter().map(|p| (s, p.node)));
            }
        }
        Work::new(cluster, ix, kept, &self.facts, Err(loads), &new)
    }

    /// The plan for the cluster as it is now: the same as [`super::plan_rebalance`].
    pub fn plan(&self, budget: &Budget) -> RebalancePlan {
        self.work().plan(budget)
    }

    /// Whether [`RebalanceIndex::plan`] would propose a move, without planning the moves: each
    /// running stateful slot is judged once where it is, and most are settled by their
    /// spread and the least loaded node alone.
    pub fn worth_moving(&self, budget: &Budget) -> bool {
        self.work().worth(budget)
    }
}
