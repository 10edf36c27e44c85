//! Everything checked and derived before the first placement: input order normalised,
//! duplicates and dangling references rejected, labels and constraints parsed, the dependency
//! order fixed, and each stateful slot's dataset resolved (given, or inferred from the task
//! that runs in the slot).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::constraint::{self, Constraint, ConstraintError};
use crate::dependency::{self, DependencyError, Order};
use crate::framework::Profile;
use crate::model::{Cluster, Dataset, LabelError, Mode, NodeId, Policy, ServiceId, Strategy};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    #[error("service `{service}`: {source}")]
    Labels {
        service: String,
        #[source]
        source: LabelError,
    },
    #[error("service `{service}`: {source}")]
    Constraint {
        service: String,
        #[source]
        source: ConstraintError,
    },
    #[error(transparent)]
    Dependency(#[from] DependencyError),
    #[error("duplicate node id `{0}`")]
    DuplicateNode(NodeId),
    #[error("duplicate service `{0}` (names and ids must be unique)")]
    DuplicateService(String),
    #[error("task `{task}`: unknown service id `{service}`")]
    UnknownService { task: String, service: ServiceId },
    #[error("{what}: unknown node `{node}`")]
    UnknownNode { what: String, node: NodeId },
    #[error("unknown service `{0}`")]
    NoSuchService(String),
    #[error("dataset `{dataset}`: {why}")]
    Dataset { dataset: String, why: String },
}

/// A cluster checked and indexed for planning. Owns its (normalised) copy of the input so the
/// snapshot can borrow from it.
pub struct Prepared {
    pub cluster: Cluster,
    pub policies: Vec<Policy>,
    pub constraints: Vec<Vec<Constraint>>,
    pub order: Order,
    pub service_by_id: BTreeMap<ServiceId, usize>,
    /// Every dataset a stateful slot has, given or inferred, by name.
    pub datasets: BTreeMap<String, Dataset>,
    pub profiles: BTreeMap<Strategy, Profile>,
}

impl Prepared {
    pub fn new(input: &Cluster) -> Result<Prepared, PlanError> {
        let mut cluster = input.clone();
        cluster.normalize();

        for w in cluster.nodes.windows(2) {
            if w[0].id == w[1].id {
                return Err(PlanError::DuplicateNode(w[0].id.clone()));
            }
        }
        let mut service_by_id = BTreeMap::new();
        let mut names = BTreeMap::new();
        for (i, s) in cluster.services.iter().enumerate() {
            if service_by_id.insert(s.id.clone(), i).is_some() {
                return Err(PlanError::DuplicateService(s.id.0.clone()));
            }
            if names.insert(s.name.as_str(), i).is_some() {
                return Err(PlanError::DuplicateService(s.name.clone()));
            }
        }

        let mut policies = Vec::with_capacity(cluster.services.len());
        let mut constraints = Vec::with_capacity(cluster.services.len());
        for s in &cluster.services {
            policies.push(s.policy().map_err(|source| PlanError::Labels {
                service: s.name.clone(),
                source,
            })?);
            constraints.push(constraint::parse_all(&s.placement.constraints).map_err(
                |source| PlanError::Constraint {
                    service: s.name.clone(),
                    source,
                },
            )?);
        }

        let name_refs: Vec<&str> = cluster.services.iter().map(|s| s.name.as_str()).collect();
        let dep_refs: Vec<&[String]> = policies.iter().map(|p| p.depends_on.as_slice()).collect();
        let order = dependency::order(&name_refs, &dep_refs)?;

        let node_known = |id: &NodeId| cluster.nodes.binary_search_by(|n| n.id.cmp(id)).is_ok();
        for t in &cluster.tasks {
            if !service_by_id.contains_key(&t.service_id) {
                return Err(PlanError::UnknownService {
                    task: t.id.clone(),
                    service: t.service_id.clone(),
                });
            }
            if let Some(n) = &t.node_id
                && !node_known(n)
            {
                return Err(PlanError::UnknownNode {
                    what: format!("task `{}`", t.id),
                    node: n.clone(),
                });
            }
        }

        let mut datasets: BTreeMap<String, Dataset> = BTreeMap::new();
        for d in &cluster.datasets {
            for n in d.primary.iter().chain(d.standby.iter()) {
                if !node_known(n) {
                    return Err(PlanError::UnknownNode {
                        what: format!("dataset `{}`", d.name),
                        node: n.clone(),
                    });
                }
            }
            if datasets.insert(d.name.clone(), d.clone()).is_some() {
                return Err(PlanError::Dataset {
                    dataset: d.name.clone(),
                    why: "listed twice".into(),
                });
            }
        }
        for (i, s) in cluster.services.iter().enumerate() {
            let (Some(st), Mode::Replicated { .. }) = (&policies[i].stateful, s.mode) else {
                continue;
            };
            // Active tasks first: they say where the data is now. A slot whose task Swarm
            // already shut down (its node died) still has its data where that task ran.
            let mut slot_tasks: Vec<&crate::model::Task> = cluster
                .tasks
                .iter()
                .filter(|t| t.service_id == s.id && t.node_id.is_some())
                .collect();
            slot_tasks.sort_by_key(|t| !t.is_active());
            for t in slot_tasks {
                let Some(slot) = t.slot else {
                    continue;
                };
                let name = st.volume_for_slot(slot);
                match datasets.get(&name) {
                    Some(d) if d.service != s.name || d.slot != slot => {
                        return Err(PlanError::Dataset {
                            dataset: name,
                            why: format!(
                                "belongs to {} slot {}, but service `{}` slot {slot} maps to it",
                                d.service, d.slot, s.name
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        // No record: the data is wherever the slot's task last ran.
                        datasets.insert(
                            name.clone(),
                            Dataset {
                                name,
                                service: s.name.clone(),
                                slot,
                                primary: t.node_id.clone(),
                                epoch: 1,
                                backend: st.backend,
                                size_bytes: 0,
                                standby: None,
                            },
                        );
                    }
                }
            }
        }

        let profiles = [
            Strategy::Spread,
            Strategy::LeastAllocated,
            Strategy::Binpack,
        ]
        .into_iter()
        .map(|s| (s, Profile::for_strategy(s)))
        .collect();
        Ok(Prepared {
            cluster,
            policies,
            constraints,
            order,
            service_by_id,
            datasets,
            profiles,
        })
    }

    pub fn service_index(&self, name: &str) -> Result<usize, PlanError> {
        self.cluster
            .services
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| PlanError::NoSuchService(name.to_string()))
    }
}
