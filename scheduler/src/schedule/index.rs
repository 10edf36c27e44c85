//! Everything checked and derived before the first placement, without copying the input:
//! the cluster stays where the caller keeps it, and the index refers to it by position.
//!
//! - **Dense orders.** Node `i` is the i-th node by ID (its rank in every tie-break), service
//!   `s` the s-th by name; `nodes[i]` and `services[s]` are their positions in the input, so
//!   permuting the input changes nothing.
//! - **Checks.** Duplicates and dangling references are rejected; labels and constraints
//!   parsed; the dependency order fixed; each stateful slot's dataset resolved (given, or
//!   inferred from the task that runs or last ran in the slot).
//! - **Static classes** (kube-scheduler's equivalence classes): services that ask the same of
//!   a node (constraints, platforms, plugins) share one evaluation of the static filters per
//!   node, so 100 services with one constraint cost one pass over the nodes, not 100.
//! - **Domains.** Each spread descriptor's value for every node, as an integer id (ids follow
//!   the values' order), so a spread tree never compares label strings.
//!
//! All of it is owned, with no borrow of the cluster, so the incremental planner
//! ([`crate::replan`]) keeps it beside its own copy of the cluster and updates it in place.

use std::collections::BTreeMap;

use crate::FastMap;

use thiserror::Error;

use crate::constraint::{self, Constraint, ConstraintError};
use crate::dependency::{self, DependencyError, Order};
use crate::framework::{
    CycleState, FilterKind, FilterPlugin, Profile, Reason, SpreadLevel, Status, TaskSpec,
};
use crate::model::{
    Cluster, Dataset, LabelError, Mode, Node, NodeId, Platform, Policy, Service, ServiceId,
    Strategy, Task,
};
use crate::plugins::preference_spread::domain_value;
use crate::snapshot::NodeInfo;

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

/// What static filters read of a service: services with equal keys get equal verdicts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    constraints: Vec<Constraint>,
    platforms: Vec<Platform>,
    volume_drivers: Vec<String>,
    log_driver: Option<String>,
}

impl ClassKey {
    fn of(service: &Service, constraints: &[Constraint]) -> ClassKey {
        let mut volume_drivers: Vec<String> =
            service.volume_drivers().map(str::to_string).collect();
        volume_drivers.sort();
        volume_drivers.dedup();
        ClassKey {
            constraints: constraints.to_vec(),
            platforms: service.placement.platforms.clone(),
            volume_drivers,
            log_driver: service.log_driver.clone(),
        }
    }
}

/// One static class: every node's verdict under the static filters, in registry order.
pub struct Class {
    /// A service of the class, whose spec stands for all of them.
    pub service: u32,
    /// Per node: 0 if every static filter passes, else 1 + index into `reasons`.
    code: Vec<u16>,
    reasons: Vec<(Reason, &'static str)>,
    /// Nodes that pass, ascending.
    pub passing: Vec<u32>,
}

impl Class {
    pub fn passes(&self, node: u32) -> bool {
        self.code[node as usize] == 0
    }

    /// The first static filter that rejects the node, and its reason.
    pub fn failure(&self, node: u32) -> Option<&(Reason, &'static str)> {
        match self.code[node as usize] {
            0 => None,
            k => Some(&self.reasons[usize::from(k) - 1]),
        }
    }
}

fn verdict(
    reasons: &mut Vec<(Reason, &'static str)>,
    filters: &[&dyn FilterPlugin],
    cx: &CycleState,
    task: &TaskSpec,
    info: &NodeInfo,
) -> u16 {
    match super::verdict::first_failure(filters, cx, task, info) {
        None => 0,
        Some(f) => {
            let k = match reasons.iter().position(|r| *r == f) {
                Some(k) => k,
                None => {
                    reasons.push(f);
                    reasons.len() - 1
                }
            };
            u16::try_from(k + 1).expect("fewer than 65k distinct static reasons per class")
        }
    }
}

/// A spread descriptor's value on every node, as ids in the values' order.
pub struct DomainTable {
    pub values: Vec<String>,
    pub of_node: Vec<u32>,
}

pub struct Index {
    /// Dense node index (ID order) → position in `cluster.nodes`.
    pub nodes: Vec<u32>,
    /// Dense service index (name order) → position in `cluster.services`.
    pub services: Vec<u32>,
    pub policies: Vec<Policy>,
    pub constraints: Vec<Vec<Constraint>>,
    pub order: Order,
    /// Service ID → dense index (looked up, never iterated).
    pub service_by_id: FastMap<String, u32>,
    /// Every dataset a stateful slot has, given or inferred, by name.
    pub datasets: BTreeMap<String, Dataset>,
    pub profiles: BTreeMap<Strategy, Profile>,
    /// Per task position: its dense service and, if it names one, its dense node.
    pub task_service: Vec<u32>,
    pub task_node: Vec<Option<u32>>,
    /// Per dense service: its static class.
    pub class_of: Vec<u32>,
    pub classes: Vec<Class>,
    /// Per spread descriptor (`node.labels.zone`): its table.
    pub domains: BTreeMap<String, DomainTable>,
}

impl Index {
    pub fn new(cluster: &Cluster) -> Result<Index, PlanError> {
        let mut nodes: Vec<u32> = (0..cluster.nodes.len() as u32).collect();
        nodes.sort_unstable_by(|a, b| {
            cluster.nodes[*a as usize]
                .id
                .cmp(&cluster.nodes[*b as usize].id)
        });
        for w in nodes.windows(2) {
            let (a, b) = (&cluster.nodes[w[0] as usize], &cluster.nodes[w[1] as usize]);
            if a.id == b.id {
                return Err(PlanError::DuplicateNode(a.id.clone()));
            }
        }
        let mut services: Vec<u32> = (0..cluster.services.len() as u32).collect();
        services.sort_by(|a, b| {
            let (a, b) = (
                &cluster.services[*a as usize],
                &cluster.services[*b as usize],
            );
            (&a.name, &a.id).cmp(&(&b.name, &b.id))
        });
        let svc = |s: usize| &cluster.services[services[s] as usize];
        let mut service_by_id =
            FastMap::with_capacity_and_hasher(services.len(), Default::default());
        for s in 0..services.len() {
            if s > 0 && svc(s).name == svc(s - 1).name {
                return Err(PlanError::DuplicateService(svc(s).name.clone()));
            }
            if service_by_id
                .insert(svc(s).id.0.clone(), s as u32)
                .is_some()
            {
                return Err(PlanError::DuplicateService(svc(s).id.0.clone()));
            }
        }

        let mut policies = Vec::with_capacity(services.len());
        let mut constraints = Vec::with_capacity(services.len());
        for s in 0..services.len() {
            let service = svc(s);
            policies.push(service.policy().map_err(|source| PlanError::Labels {
                service: service.name.clone(),
                source,
            })?);
            constraints.push(
                constraint::parse_all(&service.placement.constraints).map_err(|source| {
                    PlanError::Constraint {
                        service: service.name.clone(),
                        source,
                    }
                })?,
            );
        }
        let names: Vec<&str> = (0..services.len()).map(|s| svc(s).name.as_str()).collect();
        let deps: Vec<&[String]> = policies.iter().map(|p| p.depends_on.as_slice()).collect();
        let order = dependency::order(&names, &deps)?;

        // Hashed, not binary-searched: a search per task through the node IDs was a quarter of
        // a rescheduling plan at 10k nodes × 100k tasks. Only looked up, never iterated.
        let mut dense: FastMap<&str, u32> =
            FastMap::with_capacity_and_hasher(nodes.len(), Default::default());
        for (i, p) in nodes.iter().enumerate() {
            dense.insert(cluster.nodes[*p as usize].id.as_str(), i as u32);
        }
        let node_at = |id: &NodeId| -> Option<u32> { dense.get(id.as_str()).copied() };
        let mut task_service = Vec::with_capacity(cluster.tasks.len());
        let mut task_node = Vec::with_capacity(cluster.tasks.len());
        for t in &cluster.tasks {
            let Some(&s) = service_by_id.get(t.service_id.0.as_str()) else {
                return Err(PlanError::UnknownService {
                    task: t.id.clone(),
                    service: t.service_id.clone(),
                });
            };
            task_service.push(s);
            task_node.push(match &t.node_id {
                None => None,
                Some(n) => Some(node_at(n).ok_or_else(|| PlanError::UnknownNode {
                    what: format!("task `{}`", t.id),
                    node: n.clone(),
                })?),
            });
        }

        let mut given: BTreeMap<String, Dataset> = BTreeMap::new();
        for d in &cluster.datasets {
            for n in d.primary.iter().chain(d.standby.iter()) {
                if node_at(n).is_none() {
                    return Err(PlanError::UnknownNode {
                        what: format!("dataset `{}`", d.name),
                        node: n.clone(),
                    });
                }
            }
            if given.insert(d.name.clone(), d.clone()).is_some() {
                return Err(PlanError::Dataset {
                    dataset: d.name.clone(),
                    why: "listed twice".into(),
                });
            }
        }
        let mut ix = Index {
            nodes,
            services,
            policies,
            constraints,
            order,
            service_by_id,
            datasets: given,
            profiles: [
                Strategy::Spread,
                Strategy::LeastAllocated,
                Strategy::Binpack,
            ]
            .into_iter()
            .map(|s| (s, Profile::for_strategy(s)))
            .collect(),
            task_service,
            task_node,
            class_of: Vec::new(),
            classes: Vec::new(),
            domains: BTreeMap::new(),
        };
        ix.infer_datasets(cluster)?;
        ix.build_classes(cluster);
        ix.build_domains(cluster);
        Ok(ix)
    }

    pub fn node<'c>(&self, cluster: &'c Cluster, i: u32) -> &'c Node {
        &cluster.nodes[self.nodes[i as usize] as usize]
    }

    pub fn service<'c>(&self, cluster: &'c Cluster, s: usize) -> &'c Service {
        &cluster.services[self.services[s] as usize]
    }

    /// The dense index of a node ID.
    pub fn node_index(&self, cluster: &Cluster, id: &NodeId) -> Option<u32> {
        self.nodes
            .binary_search_by(|p| cluster.nodes[*p as usize].id.cmp(id))
            .ok()
            .map(|i| i as u32)
    }

    pub fn service_index(&self, cluster: &Cluster, name: &str) -> Result<usize, PlanError> {
        self.services
            .binary_search_by(|p| cluster.services[*p as usize].name.as_str().cmp(name))
            .map_err(|_| PlanError::NoSuchService(name.to_string()))
    }

    /// The nodes in dense order, borrowed from the cluster.
    pub fn node_refs<'c>(&self, cluster: &'c Cluster) -> Vec<&'c Node> {
        self.nodes
            .iter()
            .map(|p| &cluster.nodes[*p as usize])
            .collect()
    }

    /// Datasets inferred from tasks: a stateful slot's data is wherever its task runs, or
    /// last ran (active tasks first; then by node and task ID, the input's sorted order).
    fn infer_datasets(&mut self, cluster: &Cluster) -> Result<(), PlanError> {
        let mut by_slot: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
        for (k, t) in cluster.tasks.iter().enumerate() {
            let s = self.task_service[k];
            let (Some(slot), Some(_)) = (t.slot, &t.node_id) else {
                continue;
            };
            let service = self.service(cluster, s as usize);
            if self.policies[s as usize].stateful.is_some()
                && matches!(service.mode, Mode::Replicated { .. })
            {
                by_slot.entry((s, slot)).or_default().push(k);
            }
        }
        // Services in name order, each slot's candidates in the order the sorted input
        // would list them: a dataset claimed by two services is reported for the first.
        for ((s, slot), mut tasks) in by_slot {
            tasks.sort_by(|a, b| slot_order(&cluster.tasks[*a], &cluster.tasks[*b]));
            let service = self.service(cluster, s as usize);
            let st = self.policies[s as usize]
                .stateful
                .as_ref()
                .expect("only stateful slots are collected");
            let name = st.volume_for_slot(slot);
            match self.datasets.get(&name) {
                Some(d) if d.service != service.name || d.slot != slot => {
                    return Err(PlanError::Dataset {
                        dataset: name,
                        why: format!(
                            "belongs to {} slot {}, but service `{}` slot {slot} maps to it",
                            d.service, d.slot, service.name
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    let t = &cluster.tasks[tasks[0]];
                    self.datasets.insert(
                        name.clone(),
                        Dataset {
                            name,
                            service: service.name.clone(),
                            slot,
                            primary: t.node_id.clone(),
                            epoch: 1,
                            backend: st.backend,
                            size_bytes: 0,
                            standby: None,
                            fenced: false,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn class_filters(profile: &Profile) -> Vec<&dyn FilterPlugin> {
        profile
            .filters
            .iter()
            .filter(|f| f.kind() == FilterKind::Static)
            .map(|f| f.as_ref())
            .collect()
    }

    fn build_classes(&mut self, cluster: &Cluster) {
        let mut keys: BTreeMap<ClassKey, u32> = BTreeMap::new();
        let mut class_of = Vec::with_capacity(self.services.len());
        for s in 0..self.services.len() {
            let key = ClassKey::of(self.service(cluster, s), &self.constraints[s]);
            let next = keys.len() as u32;
            let c = *keys.entry(key).or_insert(next);
            if c == next {
                self.classes.push(Class {
                    service: s as u32,
                    code: Vec::new(),
                    reasons: Vec::new(),
                    passing: Vec::new(),
                });
            }
            class_of.push(c);
        }
        self.class_of = class_of;
        let refs = self.node_refs(cluster);
        let mut classes = std::mem::take(&mut self.classes);
        for class in &mut classes {
            let task = self.class_task(cluster, class.service as usize);
            let profile = &self.profiles[&Strategy::Spread];
            let mut cx = CycleState::new();
            let filters: Vec<&dyn FilterPlugin> = Self::class_filters(profile)
                .into_iter()
                .filter(|f| f.pre_filter(&mut cx, &task).code == Status::SUCCESS.code)
                .collect();
            class.code = Vec::with_capacity(refs.len());
            for (i, node) in refs.iter().enumerate() {
                let info = NodeInfo::new(i as u32, node);
                let v = verdict(&mut class.reasons, &filters, &cx, &task, &info);
                class.code.push(v);
                if v == 0 {
                    class.passing.push(i as u32);
                }
            }
        }
        self.classes = classes;
    }

    /// A service's spec as static filters read it (no slot, no dataset).
    fn class_task<'a>(&'a self, cluster: &'a Cluster, s: usize) -> TaskSpec<'a> {
        TaskSpec {
            service: self.service(cluster, s),
            service_idx: s as u32,
            policy: &self.policies[s],
            constraints: &self.constraints[s],
            slot: None,
            dataset: None,
        }
    }

    /// Re-evaluates one node in every class after its state changed.
    pub fn refresh_node(&mut self, cluster: &Cluster, i: u32) {
        let node = self.node(cluster, i);
        let mut classes = std::mem::take(&mut self.classes);
        for class in &mut classes {
            let task = self.class_task(cluster, class.service as usize);
            let profile = &self.profiles[&Strategy::Spread];
            let mut cx = CycleState::new();
            let filters: Vec<&dyn FilterPlugin> = Self::class_filters(profile)
                .into_iter()
                .filter(|f| f.pre_filter(&mut cx, &task).code == Status::SUCCESS.code)
                .collect();
            let v = verdict(
                &mut class.reasons,
                &filters,
                &cx,
                &task,
                &NodeInfo::new(i, node),
            );
            let was = class.code[i as usize];
            class.code[i as usize] = v;
            match (was == 0, v == 0) {
                (false, true) => {
                    let at = class.passing.binary_search(&i).unwrap_err();
                    class.passing.insert(at, i);
                }
                (true, false) => {
                    let at = class.passing.binary_search(&i).expect("was passing");
                    class.passing.remove(at);
                }
                _ => {}
            }
        }
        self.classes = classes;
    }

    fn build_domains(&mut self, cluster: &Cluster) {
        let mut descriptors: Vec<String> = Vec::new();
        for s in 0..self.services.len() {
            let task = self.class_task(cluster, s);
            for profile in self.profiles.values() {
                for sp in &profile.spreads {
                    descriptors.extend(sp.levels(&task).into_iter().map(|l| l.descriptor));
                }
            }
        }
        descriptors.sort();
        descriptors.dedup();
        let refs = self.node_refs(cluster);
        for d in descriptors {
            let raw: Vec<&str> = refs.iter().map(|n| domain_value(&d, n)).collect();
            let mut values: Vec<&str> = raw.clone();
            values.sort_unstable();
            values.dedup();
            let of_node = raw
                .iter()
                .map(|v| values.binary_search(v).expect("collected above") as u32)
                .collect();
            let values = values.into_iter().map(str::to_string).collect();
            self.domains.insert(d, DomainTable { values, of_node });
        }
    }

    pub fn domain(&self, level: &SpreadLevel) -> &DomainTable {
        &self.domains[&level.descriptor]
    }
}

/// The sorted input's order of a slot's tasks, active ones first (see `Cluster::normalize`).
pub fn slot_order(a: &Task, b: &Task) -> std::cmp::Ordering {
    (!a.is_active(), &a.node_id, &a.id).cmp(&(!b.is_active(), &b.node_id, &b.id))
}
