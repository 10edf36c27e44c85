//! The owned form of a prepared cluster, for callers that hold one across several engine
//! calls (the failover planner). It copies and sorts its input once; [`super::plan`] and the
//! incremental planner ([`crate::replan`]) do not copy at all.

use std::collections::BTreeMap;

use crate::dependency::Order;
use crate::model::{Cluster, Dataset, Policy, ServiceId};

use super::index::{Index, PlanError};

/// A cluster checked and indexed for planning, owning its normalised copy of the input:
/// `cluster.services[s]` is dense service `s`, `cluster.nodes[i]` dense node `i`.
pub struct Prepared {
    pub cluster: Cluster,
    pub policies: Vec<Policy>,
    pub order: Order,
    pub service_by_id: BTreeMap<ServiceId, usize>,
    /// Every dataset a stateful slot has, given or inferred, by name.
    pub datasets: BTreeMap<String, Dataset>,
    pub index: Index,
}

impl Prepared {
    pub fn new(input: &Cluster) -> Result<Prepared, PlanError> {
        let mut cluster = input.clone();
        cluster.normalize();
        let index = Index::new(&cluster)?;
        Ok(Prepared {
            policies: index.policies.clone(),
            order: index.order.clone(),
            service_by_id: index
                .service_by_id
                .iter()
                .map(|(id, s)| (ServiceId(id.clone()), *s as usize))
                .collect(),
            datasets: index.datasets.clone(),
            cluster,
            index,
        })
    }

    pub fn service_index(&self, name: &str) -> Result<usize, PlanError> {
        self.index.service_index(&self.cluster, name)
    }
}
