//! Builders and synthetic clusters for tests, benches and the simulator. Compiled only for
//! tests or with the `testing` feature, never into the daemon.

use crate::model::{
    Availability, Cluster, Mode, Node, NodeId, NodeState, Platform, Resources, Role, Service,
    ServiceId, Task, TaskState,
};

/// A Linux/x86_64 worker with 4 CPUs and 8 GiB, ready and active.
pub fn node(id: &str) -> Node {
    let mut n = Node::new(id);
    n.platform = Platform {
        os: "linux".into(),
        architecture: "x86_64".into(),
    };
    n.resources = Resources {
        nano_cpus: 4_000_000_000,
        memory_bytes: 8 << 30,
    };
    n
}

pub trait NodeExt: Sized {
    fn label(self, k: &str, v: &str) -> Self;
    fn role(self, r: Role) -> Self;
    fn state(self, s: NodeState) -> Self;
    fn availability(self, a: Availability) -> Self;
    fn memory_gib(self, g: i64) -> Self;
}

impl NodeExt for Node {
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn role(mut self, r: Role) -> Self {
        self.role = r;
        self
    }
    fn state(mut self, s: NodeState) -> Self {
        self.state = s;
        self
    }
    fn availability(mut self, a: Availability) -> Self {
        self.availability = a;
        self
    }
    fn memory_gib(mut self, g: i64) -> Self {
        self.resources.memory_bytes = g << 30;
        self
    }
}

pub fn replicated(name: &str, replicas: u64) -> Service {
    let mut s = Service::new(name);
    s.mode = Mode::Replicated { replicas };
    s
}

pub trait ServiceExt: Sized {
    fn label(self, k: &str, v: &str) -> Self;
    fn constraint(self, c: &str) -> Self;
    fn preference(self, p: &str) -> Self;
    fn reserve_memory_gib(self, g: i64) -> Self;
    fn stateful(self, volume: &str, failover: &str) -> Self;
}

impl ServiceExt for Service {
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn constraint(mut self, c: &str) -> Self {
        self.placement.constraints.push(c.into());
        self
    }
    fn preference(mut self, p: &str) -> Self {
        self.placement.preferences.push(p.into());
        self
    }
    fn reserve_memory_gib(mut self, g: i64) -> Self {
        self.reservations.memory_bytes = g << 30;
        self
    }
    fn stateful(self, volume: &str, failover: &str) -> Self {
        self.label("berth.stateful", "true")
            .label("berth.volume", volume)
            .label("berth.failover", failover)
    }
}

/// A running task of `service` in `slot` on `node`.
pub fn running(service: &str, slot: u64, node: &str) -> Task {
    Task {
        id: format!("{service}.{slot}"),
        service_id: ServiceId(service.into()),
        slot: Some(slot),
        node_id: Some(NodeId::new(node)),
        state: TaskState::Running,
        desired_state: TaskState::Running,
    }
}

/// Options for [`synthetic`]: the shapes of SwarmKit's scheduler benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    pub nodes: usize,
    pub tasks: u64,
    /// Add `node.labels.group==g1` (matched by half of the nodes).
    pub constraint: bool,
    /// Add `spread=node.labels.zone` over 3 zones.
    pub preference: bool,
}

/// One service of `tasks` replicas on `nodes` identical nodes, labelled so a constraint and a
/// spread preference have something to select.
pub fn synthetic(shape: Shape) -> Cluster {
    let width = shape.nodes.to_string().len();
    let nodes = (0..shape.nodes)
        .map(|i| {
            node(&format!("node-{i:0width$}"))
                .label("zone", ["a", "b", "c"][i % 3])
                .label("group", if i % 2 == 0 { "g1" } else { "g2" })
        })
        .collect();
    let mut svc = replicated("bench", shape.tasks);
    if shape.constraint {
        svc = svc.constraint("node.labels.group==g1");
    }
    if shape.preference {
        svc = svc.preference("spread=node.labels.zone");
    }
    Cluster {
        nodes,
        services: vec![svc],
        tasks: Vec::new(),
        datasets: Vec::new(),
    }
}

/// `services` services of `replicas` replicas each on `nodes` nodes labelled as in
/// [`synthetic`], every service with the constraint `node.labels.group==g1` and the
/// preference `spread=node.labels.zone`: the many-services shape.
pub fn many_services(nodes: usize, services: usize, replicas: u64) -> Cluster {
    let mut c = synthetic(Shape {
        nodes,
        tasks: replicas,
        constraint: true,
        preference: true,
    });
    let template = c.services.remove(0);
    let width = services.to_string().len();
    c.services = (0..services)
        .map(|k| {
            let mut s = template.clone();
            s.name = format!("bench-{k:0width$}");
            s.id = ServiceId(s.name.clone());
            s
        })
        .collect();
    c
}

/// The cluster once its plan has run: every placement a running task (`<service>.<slot>`
/// or `<service>.<node>`), as a controller sees a cluster at rest.
pub fn at_rest(cluster: &Cluster) -> Cluster {
    let plan = crate::schedule::plan(cluster).expect("a valid cluster");
    let mut c = cluster.clone();
    c.tasks = plan
        .placements
        .iter()
        .map(|p| {
            let svc = c
                .service_by_name(&p.service)
                .expect("planned services exist");
            Task {
                id: match p.slot {
                    Some(slot) => format!("{}.{slot}", p.service),
                    None => format!("{}.{}", p.service, p.node),
                },
                service_id: svc.id.clone(),
                slot: p.slot,
                node_id: Some(p.node.clone()),
                state: TaskState::Running,
                desired_state: TaskState::Running,
            }
        })
        .collect();
    c
}
