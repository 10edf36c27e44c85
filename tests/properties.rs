//! Property tests of the placement engine through its public API only: random small clusters
//! (≤ 30 nodes, ≤ 60 tasks) go through `plan`, and the resulting `Plan` is checked against
//! the rules every placement must obey, re-derived here from the model rather than read back
//! from the engine's plugins:
//!
//! - every new placement passes every filter (node ready and active, constraints, platform,
//!   host ports, max replicas per node, replica anti-affinity);
//! - no node that received a reserving task ends up over its CPU or memory;
//! - `berth.topology-spread` keeps each domain that received a task within the max skew;
//! - every slot (and every global member node) is either placed once or pending once;
//! - pending tasks carry reasons whose counts add up to the nodes considered;
//! - shuffling nodes, services and tasks gives an identical plan;
//! - on a feasible uniform cluster, a zone spread preference keeps zones within 1 of each
//!   other, and Swarm's spread keeps nodes within 1 of each other;
//! - after any sequence of deltas (nodes down and back, tasks failed and started, services
//!   scaled), the incremental planner's plan is the plan from scratch.
//!
//! 64 cases per property by default (`PROPTEST_CASES` overrides); the suite runs in seconds
//! in a debug build.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use berth::scheduler::constraint;
use berth::scheduler::model::{
    Availability, Cluster, Mode, Node, NodeId, NodeState, Platform, PortConfig, Protocol,
    PublishMode, Resources, Role, Service, Task, TaskState,
};
use berth::scheduler::replan::{Delta, Replanner};
use berth::scheduler::schedule::{Plan, plan};
use berth::scheduler::testing::{NodeExt, ServiceExt, node, replicated, running};

const MAX_NODES: usize = 30;
const MAX_TASKS: u64 = 60;

const CONSTRAINTS: &[&str] = &[
    "node.labels.zone==a",
    "node.labels.zone!=b",
    "node.role!=manager",
    "node.role==worker",
    "node.platform.arch==x86_64",
];

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop_oneof![
            Just(Some("a")),
            Just(Some("b")),
            Just(Some("c")),
            Just(Some("")),
            Just(None)
        ],
        prop_oneof![3 => Just(Role::Worker), 1 => Just(Role::Manager)],
        prop_oneof![
            6 => Just(NodeState::Ready),
            1 => Just(NodeState::Down),
            1 => Just(NodeState::Unknown),
            1 => Just(NodeState::Disconnected),
        ],
        prop_oneof![
            6 => Just(Availability::Active),
            1 => Just(Availability::Pause),
            1 => Just(Availability::Drain),
        ],
        1i64..=8,
        1i64..=4,
        prop_oneof![4 => Just("x86_64"), 1 => Just("aarch64")],
    )
        .prop_map(move |(zone, role, state, avail, mem, cpus, arch)| {
            let mut n = node(&format!("n{i:02}"))
                .role(role)
                .state(state)
                .availability(avail)
                .memory_gib(mem);
            if let Some(z) = zone {
                n = n.label("zone", z);
            }
            n.resources.nano_cpus = cpus * 1_000_000_000;
            n.platform.architecture = arch.into();
            n
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (1..=MAX_NODES).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

#[derive(Clone, Debug)]
struct SvcSpec {
    global: bool,
    replicas: u64,
    mem_half_gib: i64,
    cpu_half: i64,
    constraint: Option<usize>,
    preference: bool,
    max_replicas: u64,
    anti_affinity: bool,
    host_port: Option<(Protocol, u16)>,
    topology: bool,
    platform: Option<&'static str>,
}

fn arb_svc() -> impl Strategy<Value = SvcSpec> {
    (
        prop::bool::weighted(0.15),
        0u64..=15,
        prop_oneof![2 => Just(0i64), 1 => 1i64..=6],
        prop_oneof![2 => Just(0i64), 1 => 1i64..=4],
        prop::option::weighted(0.5, 0..CONSTRAINTS.len()),
        prop::bool::weighted(0.4),
        prop_oneof![3 => Just(0u64), 1 => 1u64..=3],
        prop::bool::weighted(0.25),
        prop::option::weighted(
            0.25,
            prop_oneof![
                Just((Protocol::Tcp, 80u16)),
                Just((Protocol::Tcp, 443)),
                Just((Protocol::Udp, 53)),
            ],
        ),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.2, prop_oneof![Just("amd64"), Just("arm64")]),
    )
        .prop_map(
            |(
                global,
                replicas,
                mem_half_gib,
                cpu_half,
                constraint,
                preference,
                max_replicas,
                anti_affinity,
                host_port,
                topology,
                platform,
            )| SvcSpec {
                global,
                replicas,
                mem_half_gib,
                cpu_half,
                constraint,
                preference,
                max_replicas,
                anti_affinity,
                host_port,
                topology,
                platform,
            },
        )
}

fn build_service(i: usize, s: &SvcSpec) -> Service {
    let mut svc = replicated(&format!("s{i}"), s.replicas);
    if s.global {
        svc.mode = Mode::Global;
    }
    svc.reservations = Resources {
        nano_cpus: s.cpu_half * 500_000_000,
        memory_bytes: s.mem_half_gib << 29,
    };
    if let Some(c) = s.constraint {
        svc = svc.constraint(CONSTRAINTS[c]);
    }
    if s.preference {
        svc = svc.preference("spread=node.labels.zone");
    }
    svc.placement.max_replicas = s.max_replicas;
    if s.anti_affinity {
        svc = svc.label("berth.anti-affinity", "true");
    }
    if let Some((protocol, port)) = s.host_port {
        svc.ports.push(PortConfig {
            protocol,
            target_port: 8080,
            published_port: port,
            publish_mode: PublishMode::Host,
        });
    }
    if s.topology {
        svc = svc.label("berth.topology-spread", "node.labels.zone:1");
    }
    if let Some(arch) = s.platform {
        svc.placement.platforms.push(Platform {
            os: "linux".into(),
            architecture: arch.into(),
        });
    }
    svc
}

/// A random cluster: nodes, up to 4 services (≤ 60 replicas in all), and up to 10 tasks
/// already running (possibly on down/drained nodes, possibly in slots beyond the replica
/// count, possibly duplicated, as a real cluster can report).
fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (
        arb_nodes(),
        prop::collection::vec(arb_svc(), 1..=4),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u64..=16,
                any::<prop::sample::Index>(),
                prop::bool::weighted(0.9),
            ),
            0..=10,
        ),
    )
        .prop_map(|(nodes, specs, raw_tasks)| {
            let mut budget = MAX_TASKS;
            let services: Vec<Service> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut s = s.clone();
                    s.replicas = s.replicas.min(budget);
                    budget -= s.replicas;
                    build_service(i, &s)
                })
                .collect();
            let tasks: Vec<Task> = raw_tasks
                .iter()
                .enumerate()
                .map(|(k, (si, slot, ni, active))| {
                    let svc = &services[si.index(services.len())];
                    let node = &nodes[ni.index(nodes.len())];
                    let mut t = running(&svc.name, *slot, node.id.as_str());
                    t.id = format!("t{k}");
                    if matches!(svc.mode, Mode::Global) {
                        t.slot = None;
                    }
                    if !active {
                        t.state = TaskState::Shutdown;
                        t.desired_state = TaskState::Shutdown;
                    }
                    t
                })
                .collect();
            Cluster {
                nodes,
                services,
                tasks,
                datasets: Vec::new(),
            }
        })
}

// ---------------------------------------------------------------------------------------
// Independent re-statements of the rules
// ---------------------------------------------------------------------------------------

fn arch_alias(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn platform_ok(svc: &Service, n: &Node) -> bool {
    svc.placement.platforms.is_empty()
        || svc.placement.platforms.iter().any(|p| {
            (p.os.is_empty() || p.os == n.platform.os)
                && (p.architecture.is_empty()
                    || arch_alias(&p.architecture) == arch_alias(&n.platform.architecture))
        })
}

fn constraints_ok(svc: &Service, n: &Node) -> bool {
    let cs =
        constraint::parse_all(&svc.placement.constraints).expect("generated constraints parse");
    constraint::node_matches(&cs, n)
}

/// The filters that depend only on node and service (Swarm's ready, constraint and platform
/// filters; nodes here list no engine plugins and services need none).
fn statically_eligible(svc: &Service, n: &Node) -> bool {
    n.state == NodeState::Ready
        && n.availability == Availability::Active
        && constraints_ok(svc, n)
        && platform_ok(svc, n)
}

fn zone(n: &Node) -> &str {
    n.labels.get("zone").map(String::as_str).unwrap_or("")
}

fn host_ports(svc: &Service) -> Vec<(Protocol, u16)> {
    svc.ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host && p.published_port != 0)
        .map(|p| (p.protocol, p.published_port))
        .collect()
}

struct Ctx<'c> {
    nodes: BTreeMap<&'c NodeId, &'c Node>,
    services: BTreeMap<&'c str, &'c Service>,
}

impl<'c> Ctx<'c> {
    fn new(c: &'c Cluster) -> Self {
        Ctx {
            nodes: c.nodes.iter().map(|n| (&n.id, n)).collect(),
            services: c.services.iter().map(|s| (s.name.as_str(), s)).collect(),
        }
    }
}

fn anti_affinity(svc: &Service) -> bool {
    svc.labels
        .get("berth.anti-affinity")
        .is_some_and(|v| v == "true")
}

/// Every check on one plan, as `Err(message)` naming the rule and the place it broke.
fn check_plan(c: &Cluster, p: &Plan) -> Result<(), String> {
    let cx = Ctx::new(c);

    // Per node: placements (service name, new?) in plan order.
    let mut on_node: BTreeMap<&NodeId, Vec<(&Service, bool)>> = BTreeMap::new();
    for pl in &p.placements {
        let svc = cx
            .services
            .get(pl.service.as_str())
            .ok_or_else(|| format!("placement of unknown service {}", pl.service))?;
        let n = cx
            .nodes
            .get(&pl.node)
            .ok_or_else(|| format!("placement on unknown node {}", pl.node))?;
        on_node.entry(&pl.node).or_default().push((svc, pl.new));
        if !pl.new {
            continue;
        }
        // Every filter, for every new placement.
        if n.state != NodeState::Ready || n.availability != Availability::Active {
            return Err(format!(
                "{}#{:?} placed on {} which is {:?}/{:?}",
                pl.service, pl.slot, n.id, n.state, n.availability
            ));
        }
        if !constraints_ok(svc, n) {
            return Err(format!(
                "{}#{:?} on {} violates {:?}",
                pl.service, pl.slot, n.id, svc.placement.constraints
            ));
        }
        if !platform_ok(svc, n) {
            return Err(format!(
                "{}#{:?} on {} ({:?}) violates platforms {:?}",
                pl.service, pl.slot, n.id, n.platform, svc.placement.platforms
            ));
        }
        if pl.score.is_none() {
            return Err(format!(
                "{}#{:?}: new placement without a score",
                pl.service, pl.slot
            ));
        }
    }

    for (id, tasks) in &on_node {
        let n = cx.nodes[id];
        let got_new =
            |pred: &dyn Fn(&Service) -> bool| tasks.iter().any(|(s, new)| *new && pred(s));

        // Resources: the last reserving task placed here saw everything else already booked.
        if got_new(&|s: &Service| !s.reservations.is_zero()) {
            let used = tasks
                .iter()
                .fold(Resources::default(), |acc, (s, _)| acc + s.reservations);
            if used.memory_bytes > n.resources.memory_bytes
                || used.nano_cpus > n.resources.nano_cpus
            {
                return Err(format!(
                    "node {id} over capacity: reserved {used:?} of {:?}",
                    n.resources
                ));
            }
        }

        // Host ports: a port a new task publishes is bound once on its node.
        let mut bound: BTreeMap<(Protocol, u16), (u32, bool)> = BTreeMap::new();
        for (s, new) in tasks {
            for hp in host_ports(s) {
                let e = bound.entry(hp).or_default();
                e.0 += 1;
                e.1 |= *new;
            }
        }
        for (hp, (count, has_new)) in bound {
            if has_new && count > 1 {
                return Err(format!("node {id}: host port {hp:?} bound {count} times"));
            }
        }

        // Per service on this node: max replicas and anti-affinity.
        let mut per_svc: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
        for (s, new) in tasks {
            let e = per_svc.entry(s.name.as_str()).or_default();
            e.0 += 1;
            e.1 |= *new;
        }
        for (name, (count, has_new)) in per_svc {
            let s = cx.services[name];
            if !has_new || matches!(s.mode, Mode::Global) {
                continue;
            }
            let max = s.placement.max_replicas;
            if max > 0 && count > max {
                return Err(format!(
                    "node {id}: {count} tasks of {name}, max per node {max}"
                ));
            }
            if anti_affinity(s) && count > 1 {
                return Err(format!(
                    "node {id}: {count} tasks of {name} despite anti-affinity"
                ));
            }
        }
    }

    // Topology spread (max skew 1 over node.labels.zone): a zone that received a new task
    // holds at most min(eligible zones) + 1 — the minimum only grows as tasks are placed.
    for s in &c.services {
        if !s.labels.contains_key("berth.topology-spread") || matches!(s.mode, Mode::Global) {
            continue;
        }
        let mut count: BTreeMap<&str, u64> = BTreeMap::new();
        let mut eligible: BTreeSet<&str> = BTreeSet::new();
        for n in &c.nodes {
            count.entry(zone(n)).or_default();
            if statically_eligible(s, n) {
                eligible.insert(zone(n));
            }
        }
        let mut received: BTreeSet<&str> = BTreeSet::new();
        for pl in p.placements.iter().filter(|pl| pl.service == s.name) {
            let z = zone(cx.nodes[&pl.node]);
            *count.get_mut(z).unwrap() += 1;
            if pl.new {
                received.insert(z);
            }
        }
        let Some(min) = eligible.iter().map(|z| count[z]).min() else {
            continue;
        };
        for z in received {
            if count[z] > min + 1 {
                return Err(format!(
                    "{}: zone {z:?} holds {} tasks, least loaded eligible zone {min} (max skew 1); counts {count:?}",
                    s.name, count[z]
                ));
            }
        }
    }

    // Every slot placed once or pending once; every global member node likewise.
    for s in &c.services {
        let placed: Vec<_> = p
            .placements
            .iter()
            .filter(|pl| pl.service == s.name)
            .collect();
        let pending: Vec<_> = p.pending.iter().filter(|pd| pd.service == s.name).collect();
        match s.mode {
            Mode::Replicated { replicas } => {
                let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
                for slot in placed
                    .iter()
                    .map(|x| x.slot)
                    .chain(pending.iter().map(|x| x.slot))
                {
                    let slot =
                        slot.ok_or_else(|| format!("{}: replicated task without slot", s.name))?;
                    *seen.entry(slot).or_default() += 1;
                }
                let want: BTreeMap<u64, u32> = (1..=replicas).map(|k| (k, 1)).collect();
                if seen != want {
                    return Err(format!(
                        "{}: slots placed or pending {seen:?}, want 1..={replicas} once each",
                        s.name
                    ));
                }
            }
            Mode::Global => {
                let mut seen: BTreeMap<&NodeId, u32> = BTreeMap::new();
                for pl in &placed {
                    *seen.entry(&pl.node).or_default() += 1;
                }
                for pd in &pending {
                    let id = pd
                        .node
                        .as_ref()
                        .ok_or_else(|| format!("{}: global pending without node", s.name))?;
                    *seen.entry(id).or_default() += 1;
                }
                for (id, k) in &seen {
                    if *k != 1 {
                        return Err(format!(
                            "{}: node {id} has {k} global tasks (placed + pending)",
                            s.name
                        ));
                    }
                }
                for n in &c.nodes {
                    if statically_eligible(s, n) && !seen.contains_key(&n.id) {
                        return Err(format!(
                            "{}: member node {} has no task, placed or pending",
                            s.name, n.id
                        ));
                    }
                }
            }
        }
    }

    // Pending reasons: non-empty, counting every node considered.
    if p.nodes as usize != c.nodes.len() {
        return Err(format!("plan.nodes {} != {}", p.nodes, c.nodes.len()));
    }
    for pd in &p.pending {
        if pd.reasons.is_empty() {
            return Err(format!(
                "{}#{:?}: pending without a reason",
                pd.service, pd.slot
            ));
        }
        let sum: u32 = pd.reasons.iter().map(|(_, k)| k).sum();
        let want = if pd.node.is_some() {
            1
        } else {
            c.nodes.len() as u32
        };
        if pd.nodes != want || sum != want {
            return Err(format!(
                "{}#{:?}: reasons {:?} sum to {sum}, denominator {}, want {want}",
                pd.service, pd.slot, pd.reasons, pd.nodes
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn shuffled(c: &Cluster) -> impl Strategy<Value = Cluster> + use<> {
    let c = c.clone();
    (
        Just(c.nodes.clone()).prop_shuffle(),
        Just(c.services.clone()).prop_shuffle(),
        Just(c.tasks.clone()).prop_shuffle(),
    )
        .prop_map(move |(nodes, services, tasks)| Cluster {
            nodes,
            services,
            tasks,
            datasets: c.datasets.clone(),
        })
}

/// A feasible spread case: every node ready, active, alike and labelled with a zone; one
/// service without reservations, limits or constraints.
fn arb_uniform() -> impl Strategy<Value = (Cluster, bool)> {
    (
        prop::collection::vec(0usize..3, 3..=MAX_NODES),
        1..=MAX_TASKS,
        any::<bool>(),
    )
        .prop_map(|(zones, replicas, preference)| {
            let nodes = zones
                .iter()
                .enumerate()
                .map(|(i, z)| node(&format!("n{i:02}")).label("zone", ["a", "b", "c"][*z]))
                .collect();
            let mut svc = replicated("web", replicas);
            if preference {
                svc = svc.preference("spread=node.labels.zone");
            }
            (
                Cluster {
                    nodes,
                    services: vec![svc],
                    ..Cluster::default()
                },
                preference,
            )
        })
}

fn spread(counts: impl Iterator<Item = u64>) -> u64 {
    let v: Vec<u64> = counts.collect();
    v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
}

/// 64 cases unless `PROPTEST_CASES` asks for more (a longer hunt).
fn config() -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig::with_cases(64)
    }
}

proptest! {
    #![proptest_config(config())]

    /// Filters, resources, host ports, max-per-node, anti-affinity, topology skew, slot
    /// accounting and pending reasons on random clusters.
    #[test]
    fn every_plan_obeys_every_rule(c in arb_cluster()) {
        let p = plan(&c).map_err(|e| TestCaseError::fail(format!("plan failed: {e}")))?;
        if let Err(why) = check_plan(&c, &p) {
            prop_assert!(false, "{why}\nplan: {p:#?}");
        }
    }

    /// Permuting nodes, services and tasks gives the very same plan.
    #[test]
    fn input_order_changes_nothing((c, s) in arb_cluster().prop_flat_map(|c| (Just(c.clone()), shuffled(&c)))) {
        let a = plan(&c).map_err(|e| TestCaseError::fail(format!("plan failed: {e}")))?;
        let b = plan(&s).map_err(|e| TestCaseError::fail(format!("plan failed: {e}")))?;
        prop_assert_eq!(a, b);
    }

    /// Feasible uniform cluster: zones within 1 of each other under a zone preference, and
    /// nodes within 1 of each other inside every zone (or overall without a preference).
    #[test]
    fn spread_skew_at_most_one_when_feasible((c, preference) in arb_uniform()) {
        let p = plan(&c).map_err(|e| TestCaseError::fail(format!("plan failed: {e}")))?;
        prop_assert!(p.all_placed(), "pending: {:?}", p.pending);
        let zone_of: BTreeMap<&NodeId, &str> = c.nodes.iter().map(|n| (&n.id, zone(n))).collect();
        let mut per_node: BTreeMap<&NodeId, u64> = c.nodes.iter().map(|n| (&n.id, 0)).collect();
        for pl in &p.placements {
            *per_node.get_mut(&pl.node).unwrap() += 1;
        }
        let mut per_zone: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (id, k) in &per_node {
            per_zone.entry(zone_of[id]).or_default().push(*k);
        }
        if preference {
            let totals = per_zone.values().map(|v| v.iter().sum::<u64>());
            prop_assert!(spread(totals) <= 1, "zone totals skewed: {per_zone:?}");
            for (z, v) in &per_zone {
                prop_assert!(spread(v.iter().copied()) <= 1, "zone {z} nodes skewed: {v:?}");
            }
        } else {
            prop_assert!(spread(per_node.values().copied()) <= 1, "nodes skewed: {per_node:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Minimal cases found by the properties above, kept as plain tests
// ---------------------------------------------------------------------------------------

fn zone_counts(c: &Cluster, p: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for pl in &p.placements {
        let n = c.nodes.iter().find(|n| n.id == pl.node).unwrap();
        *out.entry(zone(n).to_string()).or_default() += 1;
    }
    out
}

/// Found by `every_plan_obeys_every_rule` (shrunk): a spread preference on the same key as a
/// topology spread turns the hard skew soft. Zone c has room for 1 replica, zone b for 3; with
/// max skew 1 the plan must stop at c=1, b=2 and leave one task pending.
#[test]
fn topology_spread_holds_under_a_preference_on_the_same_key() {
    let nodes = vec![
        node("n00").label("zone", "c"),
        node("n01").label("zone", "b"),
        node("n02").label("zone", "b"),
        node("n03").label("zone", "b"),
    ];
    let svc = replicated("s0", 4)
        .preference("spread=node.labels.zone")
        .label("berth.topology-spread", "node.labels.zone:1")
        .label("berth.anti-affinity", "true");
    let c = Cluster {
        nodes,
        services: vec![svc],
        ..Cluster::default()
    };
    let p = plan(&c).unwrap();
    let counts = zone_counts(&c, &p);
    assert_eq!(
        counts,
        BTreeMap::from([("b".to_string(), 2), ("c".to_string(), 1)]),
        "max skew 1 over zones; pending: {:?}",
        p.pending
    );
    assert_eq!(p.pending.len(), 1);
    assert!(
        p.pending[0]
            .message()
            .contains("would exceed max skew 1 on node.labels.zone")
    );
}

/// The same defect with different keys: the hard skew over zones is only enforced among the
/// zones inside one rack (the preference branch), not across the cluster.
#[test]
fn topology_spread_holds_across_preference_branches() {
    let nodes = vec![
        node("n00").label("rack", "r1").label("zone", "a"),
        node("n01").label("rack", "r2").label("zone", "b"),
        node("n02").label("rack", "r2").label("zone", "b"),
        node("n03").label("rack", "r2").label("zone", "b"),
    ];
    let svc = replicated("s0", 4)
        .preference("spread=node.labels.rack")
        .label("berth.topology-spread", "node.labels.zone:1")
        .label("berth.anti-affinity", "true");
    let c = Cluster {
        nodes,
        services: vec![svc],
        ..Cluster::default()
    };
    let p = plan(&c).unwrap();
    let counts = zone_counts(&c, &p);
    assert_eq!(
        counts,
        BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]),
        "max skew 1 over zones; pending: {:?}",
        p.pending
    );
}

// ---------------------------------------------------------------------------------------
// Incremental re-planning
// ---------------------------------------------------------------------------------------

/// A random delta against a cluster: which node, task or service it names is drawn by index
/// (and may name something unknown, which must be refused and change nothing).
fn arb_delta() -> impl Strategy<Value = (u8, prop::sample::Index, u64, bool)> {
    (
        0u8..6,
        any::<prop::sample::Index>(),
        0u64..=16,
        any::<bool>(),
    )
}

fn delta(
    c: &Cluster,
    (kind, pick, n, flag): (u8, prop::sample::Index, u64, bool),
    seq: usize,
) -> Delta {
    let node = &c.nodes[pick.index(c.nodes.len())];
    match kind {
        0 => Delta::NodeDown(node.id.clone()),
        1 => Delta::NodeBack(node.id.clone()),
        2 if !c.tasks.is_empty() => {
            Delta::TaskFailed(c.tasks[pick.index(c.tasks.len())].id.clone())
        }
        3 | 2 => {
            let svc = &c.services[pick.index(c.services.len())];
            let mut t = running(&svc.name, n.max(1), node.id.as_str());
            t.service_id = svc.id.clone();
            // A new task, or a known one moving.
            t.id = if flag && !c.tasks.is_empty() {
                c.tasks[pick.index(c.tasks.len())].id.clone()
            } else {
                format!("new{seq}")
            };
            if matches!(svc.mode, Mode::Global) {
                t.slot = None;
            }
            Delta::TaskStarted(t)
        }
        4 => Delta::ServiceScaled {
            service: c.services[pick.index(c.services.len())].name.clone(),
            replicas: n,
        },
        _ => Delta::NodeDown(NodeId::new(if flag { "nope" } else { "n00" })),
    }
}

/// Some services of a random cluster made stateful (a dataset per slot, random failover
/// mode), so that deltas also move datasets.
fn with_stateful(mut c: Cluster, which: u8) -> Cluster {
    let modes = ["move", "recreate", "manual"];
    for (i, s) in c.services.iter_mut().enumerate() {
        if which & (1 << i) != 0 && matches!(s.mode, Mode::Replicated { .. }) {
            let volume = format!("{}-data-{{slot}}", s.name);
            *s = s.clone().stateful(&volume, modes[i % modes.len()]);
        }
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// After every delta of a random sequence, the incremental plan is the plan from scratch
    /// of the cluster the deltas left.
    #[test]
    fn incremental_plan_equals_plan_from_scratch(
        c in arb_cluster(),
        stateful in any::<u8>(),
        deltas in prop::collection::vec(arb_delta(), 1..12),
    ) {
        let c = with_stateful(c, stateful);
        let Ok(mut r) = Replanner::new(c.clone()) else {
            // Inputs the engine refuses are refused alike.
            prop_assert!(plan(&c).is_err());
            return Ok(());
        };
        prop_assert_eq!(r.plan(), plan(r.cluster()).expect("valid"));
        for (seq, d) in deltas.into_iter().enumerate() {
            let d = delta(r.cluster(), d, seq);
            let before = r.plan();
            match r.apply(d.clone()) {
                Ok(_) => {
                    let scratch = plan(r.cluster())
                        .map_err(|e| TestCaseError::fail(format!("after {d:?}: {e}")))?;
                    prop_assert_eq!(r.plan(), scratch, "after {:?}", d);
                }
                Err(_) => prop_assert_eq!(r.plan(), before, "a refused {:?} changed the plan", d),
            }
        }
    }
}
