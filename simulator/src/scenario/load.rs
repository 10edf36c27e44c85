//! Reading a scenario: TOML → [`file::File`] → checked, resolved [`Scenario`].
//!
//! Every error carries a byte span into the source, turned here into `file:line:col: field
//! `name`: message`. Syntax and type errors come from toml's own spans; reference errors (an
//! unknown node in a fault) from the `Spanned` names; engine errors (a bad `berth.*` label, a
//! bad constraint, a dependency cycle) point at the service that caused them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use berth_scheduler::ingest;
use berth_scheduler::model::labels::{LabelError, STATEFUL};
use berth_scheduler::model::{Cluster, Mode, Node, Platform, Resources, Role, Service};
use berth_scheduler::schedule::{PlanError, Prepared};
use thiserror::Error;
use toml::Spanned;

use super::file::{self, File};
use super::{
    BerthTiming, Bounds, DataPath, DataSpec, ManualTiming, NodeSpec, Scenario, ServiceSpec,
    SwarmTiming,
};
use crate::clock::{MINUTE, SECOND};
use crate::faults::{Fault, FaultKind, RandomFaults, RandomKind};

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {field}{message}")]
    At {
        path: String,
        line: usize,
        col: usize,
        /// "field `x`: " or empty.
        field: String,
        message: String,
    },
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(&shown, &text)
}

/// Builds an error at `span`, naming the key written on that line.
fn at(path: &str, text: &str, span: Range<usize>, message: String) -> ScenarioError {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let field = match line_text.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() && !k.trim().starts_with('[') => {
            format!("field `{}`: ", k.trim().trim_matches('"'))
        }
        _ => String::new(),
    };
    ScenarioError::At {
        path: path.to_string(),
        line,
        col,
        field,
        message,
    }
}

/// Builds errors at byte spans of one source.
type Err<'a> = dyn Fn(Range<usize>, String) -> ScenarioError + 'a;

/// A node as resolved: what the simulator keeps, the engine's node, and where it was written.
type NodeEntry = (NodeSpec, Node, Range<usize>);

/// A service as resolved: what the simulator keeps, the engine's service, and its source
/// (the `name` and `labels` spans; `[inspect]` services have the file's span for both).
struct ServiceEntry {
    spec: ServiceSpec,
    service: Service,
    name_span: Range<usize>,
    labels: BTreeMap<String, Range<usize>>,
}

impl ServiceEntry {
    /// Where a label error points: the label's own line where it can be named.
    fn label_span(&self, e: &LabelError) -> Range<usize> {
        let label = match e {
            LabelError::Unknown { label } => label.as_str(),
            LabelError::Invalid { label, .. } | LabelError::NeedsStateful { label } => label,
            LabelError::MissingVolume => STATEFUL,
        };
        self.labels
            .get(label)
            .cloned()
            .unwrap_or_else(|| self.name_span.clone())
    }
}

/// What `[inspect]` brought in.
#[derive(Default)]
struct Inspected {
    services: Vec<(Service, Range<usize>)>,
    tasks: Vec<berth_scheduler::model::Task>,
    notes: Vec<String>,
}

pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let f: File = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at(path, text, span, e.message().trim().to_string())
    })?;
    let err = |span: Range<usize>, msg: String| at(path, text, span, msg);

    if f.duration.ms() == 0 {
        return Err(err(0..0, "field `duration`: must be above zero".into()));
    }
    let mut nodes = resolve_nodes(&f, &err)?;
    let inspected = resolve_inspect(&f, path, &mut nodes, &err)?;
    let (index, zones) = check_nodes(&mut nodes, &err)?;
    let (services, mut cluster) =
        resolve_services(&f, inspected.services, inspected.tasks, &nodes, &err)?;
    let rebalance = super::rebalance::resolve(f.rebalance.as_ref(), &index, &err)?;
    if let Some(r) = &rebalance {
        // A node that joins later is not there for the initial placement (and is kept out of
        // the engine's views until it joins: `Sim::new`).
        for &(_, n) in &r.joins {
            cluster.nodes[n as usize].availability = berth_scheduler::model::Availability::Drain;
        }
    }
    let restart = f.berth.restart.map(|d| d.ms()).unwrap_or(10 * SECOND);
    let faults = resolve_faults(&f.faults, &index, &zones, restart, &err)?;
    let random = resolve_random(&f, &nodes, &err)?;
    let (swarm, berth, manual) = resolve_timings(&f, &err)?;
    let bounds = Bounds {
        berth_max_unavailable_p99: f.bounds.berth_max_unavailable_p99.map(|d| d.ms()),
        berth_max_lost_writes: f.bounds.berth_max_lost_writes,
        berth_max_double_writer_windows: f.bounds.berth_max_double_writer_windows,
        lost_writes: f.bounds.lost_writes.into(),
    };

    Ok(Scenario {
        path: path.to_string(),
        name: f.name,
        description: f.description,
        duration: f.duration.ms(),
        seed: f.seed,
        swarm,
        berth,
        manual,
        nodes: nodes.into_iter().map(|n| n.0).collect(),
        services: services.into_iter().map(|s| s.spec).collect(),
        faults,
        random,
        bounds,
        cluster,
        zones,
        notes: inspected.notes,
        rebalance,
    })
}

/// `[[nodes]]` and `[[node_groups]]`.
fn resolve_nodes(f: &File, err: &Err) -> Result<Vec<NodeEntry>, ScenarioError> {
    let mut nodes: Vec<NodeEntry> = Vec::new();
    let role_of = |r: &Option<String>, span: Range<usize>| match r.as_deref() {
        None | Some("worker") => Ok(Role::Worker),
        Some("manager") => Ok(Role::Manager),
        Some(v) => Err(err(span, format!("role `{v}`: expected manager or worker"))),
    };
    let make =
        |name: &str, role: Role, zone: &str, labels: &BTreeMap<String, String>, cpus, mem| {
            let mut n = Node::new(name);
            n.role = role;
            n.platform = Platform {
                os: "linux".into(),
                architecture: "x86_64".into(),
            };
            n.labels = labels.clone();
            if !zone.is_empty() {
                n.labels.insert("zone".into(), zone.to_string());
            }
            n.resources = Resources {
                nano_cpus: i64::from(cpus) * 1_000_000_000,
                memory_bytes: i64::try_from(mem).unwrap_or(i64::MAX),
            };
            n
        };
    for n in &f.nodes {
        let role = role_of(&n.role, n.name.span())?;
        let zone = n.zone.clone().unwrap_or_default();
        let node = make(
            n.name.get_ref(),
            role,
            &zone,
            &n.labels,
            n.cpus.unwrap_or(2),
            n.memory.map(|m| m.0).unwrap_or(2 << 30),
        );
        nodes.push((
            NodeSpec {
                name: n.name.get_ref().clone(),
                id: n.name.get_ref().clone(),
                manager: role == Role::Manager,
                zone,
            },
            node,
            n.name.span(),
        ));
    }
    for g in &f.node_groups {
        let role = role_of(&g.role, g.prefix.span())?;
        let width = g.count.to_string().len();
        for i in 0..g.count {
            let name = format!("{}{:0width$}", g.prefix.get_ref(), i + 1);
            let zone = if g.zones.is_empty() {
                String::new()
            } else {
                g.zones[i as usize % g.zones.len()].clone()
            };
            let node = make(
                &name,
                role,
                &zone,
                &g.labels,
                g.cpus.unwrap_or(2),
                g.memory.map(|m| m.0).unwrap_or(2 << 30),
            );
            nodes.push((
                NodeSpec {
                    id: name.clone(),
                    name,
                    manager: role == Role::Manager,
                    zone,
                },
                node,
                g.prefix.span(),
            ));
        }
    }
    Ok(nodes)
}

/// `[inspect]`: real `docker inspect` nodes (added to `nodes`), services and tasks.
fn resolve_inspect(
    f: &File,
    path: &str,
    nodes: &mut Vec<NodeEntry>,
    err: &Err,
) -> Result<Inspected, ScenarioError> {
    let mut out = Inspected::default();
    let Some(ins) = &f.inspect else {
        return Ok(out);
    };
    let base = Path::new(path).parent().unwrap_or(Path::new("."));
    let read = |rel: &Spanned<String>| -> Result<(String, String), ScenarioError> {
        let full = base.join(rel.get_ref());
        let shown = full.display().to_string();
        std::fs::read_to_string(&full)
            .map(|t| (shown, t))
            .map_err(|e| err(rel.span(), format!("{}: {e}", full.display())))
    };
    let (file, json) = read(&ins.nodes)?;
    let found = ingest::nodes(&file, &json).map_err(|e| err(ins.nodes.span(), e.to_string()))?;
    for n in found {
        let name = if n.hostname.is_empty() {
            n.id.0.clone()
        } else {
            n.hostname.clone()
        };
        let zone = n.labels.get("zone").cloned().unwrap_or_default();
        nodes.push((
            NodeSpec {
                name,
                id: n.id.0.clone(),
                manager: n.role == Role::Manager,
                zone,
            },
            n,
            ins.nodes.span(),
        ));
    }
    let (file, json) = read(&ins.services)?;
    for svc in
        ingest::services(&file, &json).map_err(|e| err(ins.services.span(), e.to_string()))?
    {
        if matches!(svc.mode, Mode::Global) {
            out.notes
                .push(format!("global service `{}` is not simulated", svc.name));
            continue;
        }
        out.services.push((svc, ins.services.span()));
    }
    if let Some(t) = &ins.tasks {
        let (file, json) = read(t)?;
        out.tasks = ingest::tasks(&file, &json).map_err(|e| err(t.span(), e.to_string()))?;
    }
    Ok(out)
}

/// Sorts the nodes by engine ID and checks them; returns the index faults resolve names
/// with (name or engine ID) and the zones.
#[allow(clippy::type_complexity)]
fn check_nodes(
    nodes: &mut [NodeEntry],
    err: &Err,
) -> Result<(BTreeMap<String, u32>, BTreeMap<String, Vec<u32>>), ScenarioError> {
    nodes.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    for w in nodes.windows(2) {
        if w[0].0.id == w[1].0.id {
            return Err(err(
                w[1].2.clone(),
                format!("duplicate node `{}`", w[1].0.name),
            ));
        }
    }
    if nodes.is_empty() {
        return Err(err(
            0..0,
            "no nodes: add [[nodes]] or [[node_groups]]".into(),
        ));
    }
    if !nodes.iter().any(|n| n.0.manager) {
        return Err(err(
            nodes[0].2.clone(),
            "no manager: at least one node needs role = \"manager\"".into(),
        ));
    }
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        index.insert(n.0.id.clone(), i as u32);
        index.insert(n.0.name.clone(), i as u32);
    }
    let mut zones: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if !n.0.zone.is_empty() {
            zones.entry(n.0.zone.clone()).or_default().push(i as u32);
        }
    }
    Ok((index, zones))
}

/// The simulator's facts about a service's data (`[services.data]` or `[data.<name>]`).
fn data_spec(d: Option<&file::DataFile>) -> DataSpec {
    DataSpec {
        size_bytes: d.and_then(|d| d.size).map(|v| v.0).unwrap_or(1 << 30),
        writes_per_sec: d.and_then(|d| d.writes_per_sec).unwrap_or(0),
        write_bytes: d.and_then(|d| d.write_bytes).map(|v| v.0).unwrap_or(4096),
        replication_lag: d
            .and_then(|d| d.replication_lag)
            .map(|v| v.ms())
            .unwrap_or(SECOND),
    }
}

/// `[[services]]`, `[inspect]`'s services and `[data.*]`, then the engine's own checks of
/// the whole cluster (labels, constraints, dependency cycles, duplicates).
fn resolve_services(
    f: &File,
    inspected: Vec<(Service, Range<usize>)>,
    inspected_tasks: Vec<berth_scheduler::model::Task>,
    nodes: &[NodeEntry],
    err: &Err,
) -> Result<(Vec<ServiceEntry>, Cluster), ScenarioError> {
    let mut services: Vec<ServiceEntry> = Vec::new();
    for s in &f.services {
        let name = s.name.get_ref().clone();
        let mut svc = Service::new(name.clone());
        svc.mode = Mode::Replicated {
            replicas: s.replicas,
        };
        svc.labels = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        svc.placement.constraints = s.constraints.clone();
        svc.placement.preferences = s.preferences.clone();
        if let Some(m) = s.reserve_memory {
            svc.reservations.memory_bytes = i64::try_from(m.0).unwrap_or(i64::MAX);
        }
        let mut entry = ServiceEntry {
            spec: ServiceSpec {
                name: name.clone(),
                replicas: s.replicas,
                policy: Default::default(),
                data: data_spec(s.data.as_ref().or_else(|| f.data.get(&name))),
            },
            service: svc,
            name_span: s.name.span(),
            labels: s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.span()))
                .collect(),
        };
        entry.spec.policy = entry
            .service
            .policy()
            .map_err(|e| err(entry.label_span(&e), format!("service `{name}`: {e}")))?;
        if entry.spec.data.writes_per_sec > 1_000_000 {
            return Err(err(
                s.name.span(),
                format!("service `{name}`: writes_per_sec above 1,000,000 is not modelled"),
            ));
        }
        if s.data.is_some() && entry.spec.policy.stateful.is_none() {
            return Err(err(
                s.name.span(),
                format!("service `{name}`: [services.data] needs berth.stateful=true labels"),
            ));
        }
        services.push(entry);
    }
    for (svc, span) in inspected {
        let name = svc.name.clone();
        let policy = svc
            .policy()
            .map_err(|e| err(span.clone(), format!("service `{name}`: {e}")))?;
        let Mode::Replicated { replicas } = svc.mode else {
            continue;
        };
        let d = f.data.get(&name);
        if d.is_some() && policy.stateful.is_none() {
            return Err(err(
                span,
                format!("[data.{name}] needs berth.stateful=true labels"),
            ));
        }
        services.push(ServiceEntry {
            spec: ServiceSpec {
                name,
                replicas,
                policy,
                data: data_spec(d),
            },
            service: svc,
            name_span: span,
            labels: BTreeMap::new(),
        });
    }
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    if services.is_empty() {
        return Err(err(
            0..0,
            "no services: add [[services]] or [inspect]".into(),
        ));
    }
    for name in f.data.keys() {
        if !services.iter().any(|s| &s.spec.name == name) {
            return Err(err(0..0, format!("[data.{name}]: no such service")));
        }
    }
    // Running tasks of simulated services: the initial placement, where given.
    let kept: std::collections::BTreeSet<&str> =
        services.iter().map(|s| s.service.id.0.as_str()).collect();
    let tasks: Vec<_> = inspected_tasks
        .into_iter()
        .filter(|t| t.is_active() && t.slot.is_some() && kept.contains(t.service_id.0.as_str()))
        .collect();
    let cluster = Cluster {
        nodes: nodes.iter().map(|n| n.1.clone()).collect(),
        services: services.iter().map(|s| s.service.clone()).collect(),
        tasks,
        datasets: Vec::new(),
    };
    if let Err(e) = Prepared::new(&cluster) {
        let find = |service: &str| services.iter().find(|s| s.spec.name == service);
        let span = match &e {
            PlanError::Labels { service, source } => find(service).map(|s| s.label_span(source)),
            PlanError::Constraint { service, .. } | PlanError::DuplicateService(service) => {
                find(service).map(|s| s.name_span.clone())
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            services
                .first()
                .map(|s| s.name_span.clone())
                .unwrap_or(0..0)
        });
        return Err(err(span, e.to_string()));
    }
    Ok((services, cluster))
}

/// `[random]`.
fn resolve_random(
    f: &File,
    nodes: &[NodeEntry],
    err: &Err,
) -> Result<Option<RandomFaults>, ScenarioError> {
    let Some(r) = &f.random else {
        return Ok(None);
    };
    let mut kinds = Vec::new();
    for k in &r.kinds {
        match RandomKind::ALL.iter().find(|(n, _)| n == k.get_ref()) {
            Some((_, kind)) => kinds.push(*kind),
            None => {
                let known: Vec<&str> = RandomKind::ALL.iter().map(|(n, _)| *n).collect();
                return Err(err(
                    k.span(),
                    format!(
                        "unknown random fault kind `{}` (known: {})",
                        k.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    let targets: Vec<u32> = match r.targets.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("workers") => nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.0.manager)
            .map(|(i, _)| i as u32)
            .collect(),
        Some("all") => (0..nodes.len() as u32).collect(),
        Some(v) => {
            let span = r.targets.as_ref().map(|t| t.span()).unwrap_or(0..0);
            return Err(err(span, format!("targets `{v}`: expected workers or all")));
        }
    };
    let recover_min = r.recover_min.map(|d| d.ms()).unwrap_or(MINUTE);
    let recover_max = r.recover_max.map(|d| d.ms()).unwrap_or(30 * MINUTE);
    Ok(Some(RandomFaults {
        every: r.every.ms(),
        kinds,
        start_after: r.start_after.map(|d| d.ms()).unwrap_or(MINUTE),
        recover_min,
        recover_max: recover_max.max(recover_min),
        targets,
    }))
}

/// `[swarm]`, `[berth]`, `[manual]`, with their defaults.
fn resolve_timings(
    f: &File,
    err: &Err,
) -> Result<(SwarmTiming, BerthTiming, ManualTiming), ScenarioError> {
    let ms = |d: Option<file::Dur>, default| d.map(|d| d.ms()).unwrap_or(default);
    let swarm = SwarmTiming {
        heartbeat: ms(f.swarm.heartbeat, 5 * SECOND),
        heartbeat_jitter: ms(f.swarm.heartbeat_jitter, 500),
        grace_multiplier: f.swarm.grace_multiplier.unwrap_or(3).max(1),
        leader_change_multiplier: f.swarm.leader_change_multiplier.unwrap_or(2).max(1),
        restart_delay: ms(f.swarm.restart_delay, 5 * SECOND),
        start_latency: ms(f.swarm.start_latency, 2 * SECOND),
        stop_latency: ms(f.swarm.stop_latency, SECOND),
    };
    if swarm.heartbeat == 0 || swarm.heartbeat_jitter >= swarm.heartbeat {
        return Err(err(
            0..0,
            "[swarm]: heartbeat must be above zero and above heartbeat_jitter".into(),
        ));
    }
    let berth = BerthTiming {
        heartbeat: ms(f.berth.heartbeat, SECOND),
        misses: f.berth.misses.unwrap_or(3).max(1),
        lease: ms(f.berth.lease, 2 * SECOND),
        fence_lease: ms(f.berth.fence_lease, 0),
        fence: ms(f.berth.fence, 200),
        attach: ms(f.berth.attach, SECOND),
        promote: ms(f.berth.promote, 2 * SECOND),
        move_bandwidth: f.berth.move_bandwidth.map(|r| r.0).unwrap_or(100 << 20),
        incremental: f.berth.incremental.unwrap_or(true),
        start_latency: ms(f.berth.start_latency, 2 * SECOND),
        stop_latency: ms(f.berth.stop_latency, SECOND),
        plan: ms(f.berth.plan, 50),
        restart: ms(f.berth.restart, 10 * SECOND),
        data_path: match &f.berth.data_path {
            None => DataPath::Fuse,
            Some(s) => DataPath::parse(s.get_ref()).ok_or_else(|| {
                err(
                    s.span(),
                    format!("unknown data path `{}` (known: fuse, direct)", s.get_ref()),
                )
            })?,
        },
    };
    if berth.heartbeat == 0 {
        return Err(err(0..0, "[berth]: heartbeat must be above zero".into()));
    }
    let manual = ManualTiming {
        operator_response: ms(f.manual.operator_response, 15 * MINUTE),
    };
    Ok((swarm, berth, manual))
}

/// `[[faults]]` tables → faults, names resolved against the scenario's nodes and zones.
fn resolve_faults(
    list: &[file::FaultFile],
    index: &BTreeMap<String, u32>,
    zones: &BTreeMap<String, Vec<u32>>,
    restart: crate::clock::Ms,
    err: &Err,
) -> Result<Vec<Fault>, ScenarioError> {
    let node_ref = |s: &Spanned<String>| {
        index
            .get(s.get_ref())
            .copied()
            .ok_or_else(|| err(s.span(), format!("unknown node `{}`", s.get_ref())))
    };
    let need = |v: Option<file::Dur>, span: &Range<usize>, what: &str, kind: &str| {
        v.map(|d| d.ms())
            .ok_or_else(|| err(span.clone(), format!("a `{kind}` fault needs `{what}`")))
    };

    let mut faults = Vec::new();
    for ff in list {
        let kspan = ff.kind.span();
        let kind = ff.kind.get_ref().as_str();
        let one_node = || match &ff.node {
            Some(n) => node_ref(n),
            None => Err(err(kspan.clone(), format!("a `{kind}` fault needs `node`"))),
        };
        let kind = match kind {
            "crash" => FaultKind::Crash {
                node: one_node()?,
                recover_after: ff.recover_after.map(|d| d.ms()),
            },
            "zone-loss" => {
                let z = ff
                    .zone
                    .as_ref()
                    .ok_or_else(|| err(kspan.clone(), "a `zone-loss` fault needs `zone`".into()))?;
                let members = zones
                    .get(z.get_ref())
                    .ok_or_else(|| err(z.span(), format!("unknown zone `{}`", z.get_ref())))?;
                FaultKind::ZoneLoss {
                    zone: z.get_ref().clone(),
                    nodes: members.clone(),
                    recover_after: ff.recover_after.map(|d| d.ms()),
                }
            }
            "partition" => {
                let mut ns = Vec::new();
                if let Some(n) = &ff.node {
                    ns.push(node_ref(n)?);
                }
                for n in &ff.nodes {
                    ns.push(node_ref(n)?);
                }
                if ns.is_empty() {
                    return Err(err(
                        kspan,
                        "a `partition` fault needs `node` or `nodes`".into(),
                    ));
                }
                FaultKind::Partition {
                    nodes: ns,
                    storage: ff.storage.unwrap_or(true),
                    duration: need(ff.duration, &kspan, "duration", kind)?,
                }
            }
            "disk-loss" => FaultKind::DiskLoss {
                node: one_node()?,
                repair_after: need(ff.recover_after, &kspan, "recover_after", kind)?,
            },
            "slow-disk" => FaultKind::SlowDisk {
                node: one_node()?,
                factor: ff.factor.unwrap_or(10).max(1),
                duration: need(ff.duration, &kspan, "duration", kind)?,
            },
            "flap" => FaultKind::Flap {
                node: one_node()?,
                down: need(ff.down, &kspan, "down", kind)?,
                up: need(ff.up, &kspan, "up", kind)?,
                count: ff.count.unwrap_or(3),
            },
            "quorum-loss" => FaultKind::QuorumLoss {
                duration: need(ff.duration, &kspan, "duration", kind)?,
            },
            "scheduler-restart" => FaultKind::SchedulerRestart {
                duration: ff.duration.map(|d| d.ms()).unwrap_or(restart),
            },
            "drain" => FaultKind::Drain {
                node: one_node()?,
                duration: ff.duration.map(|d| d.ms()),
            },
            "agent-crash" => FaultKind::AgentCrash {
                node: one_node()?,
                restart_after: ff.restart_after.map(|d| d.ms()),
            },
            "agent-pause" => FaultKind::AgentPause {
                node: one_node()?,
                duration: need(ff.duration, &kspan, "duration", kind)?,
            },
            "node-freeze" => FaultKind::NodeFreeze {
                node: one_node()?,
                duration: need(ff.duration, &kspan, "duration", kind)?,
            },
            "control-loss" => FaultKind::ControlLoss {
                duration: need(ff.duration, &kspan, "duration", kind)?,
            },
            other => {
                return Err(err(
                    kspan,
                    format!(
                        "unknown fault kind `{other}` (known: crash, zone-loss, partition, \
                         disk-loss, slow-disk, flap, quorum-loss, scheduler-restart, drain, \
                         agent-crash, agent-pause, node-freeze, control-loss)"
                    ),
                ));
            }
        };
        faults.push(Fault {
            at: ff.at.ms(),
            kind,
        });
    }
    faults.sort_by_key(|f| f.at);
    Ok(faults)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsOnly {
    #[serde(default)]
    faults: Vec<file::FaultFile>,
}

/// A file of `[[faults]]` only (what `shrink` writes), against a loaded scenario.
pub fn load_faults(scn: &Scenario, path: &Path) -> Result<Vec<Fault>, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_faults(scn, &shown, &text)
}

pub fn parse_faults(scn: &Scenario, path: &str, text: &str) -> Result<Vec<Fault>, ScenarioError> {
    let f: FaultsOnly = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at(path, text, span, e.message().trim().to_string())
    })?;
    let err = |span: Range<usize>, msg: String| at(path, text, span, msg);
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    for (i, n) in scn.nodes.iter().enumerate() {
        index.insert(n.id.clone(), i as u32);
        index.insert(n.name.clone(), i as u32);
    }
    resolve_faults(&f.faults, &index, &scn.zones, scn.berth.restart, &err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
duration = "10m"
[[nodes]]
name = "m1"
role = "manager"
[[nodes]]
name = "w1"
zone = "a"
[[services]]
name = "db"
replicas = 1
labels = { "berth.stateful" = "true", "berth.volume" = "db-{slot}" }
[services.data]
writes_per_sec = 10
[[faults]]
at = "1m"
kind = "crash"
node = "w1"
"#;

    #[test]
    fn loads_a_small_scenario() {
        let s = parse("t.toml", OK).unwrap();
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.services[0].data.writes_per_sec, 10);
        assert_eq!(s.faults.len(), 1);
        assert_eq!(s.swarm.heartbeat, 5_000);
    }

    fn error(text: &str) -> String {
        parse("t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = error(&OK.replace("node = \"w1\"", "node = \"w9\""));
        assert_eq!(e, "t.toml:19:8: field `node`: unknown node `w9`");
        let e = error(&OK.replace("at = \"1m\"", "at = \"1 minute\""));
        assert!(e.starts_with("t.toml:17:6: field `at`: "), "{e}");
        let e = error(&OK.replace("writes_per_sec", "writes_per_second"));
        assert!(e.starts_with("t.toml:15:1: "), "{e}");
        assert!(e.contains("unknown field `writes_per_second`"), "{e}");
        // A label error points at the label, not at the service's name.
        let e = error(&OK.replace("db-{slot}", "db"));
        assert!(
            e.starts_with("t.toml:13:56: field `labels`: service `db`: label `berth.volume`"),
            "{e}"
        );
        let e = error(&OK.replace("\"crash\"", "\"explode\""));
        assert!(
            e.contains("t.toml:18:8: field `kind`: unknown fault kind `explode`"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_label_points_at_its_line() {
        let text = r#"
name = "t"
duration = "10m"
[[nodes]]
name = "m1"
role = "manager"
[[services]]
name = "db"
replicas = 1
[services.labels]
"berth.stateful" = "true"
"berth.volume" = "db-{slot}"
"berth.volumes" = "typo"
"#;
        let e = error(text);
        assert!(
            e.starts_with(
                "t.toml:13:19: field `berth.volumes`: service `db`: unknown label `berth.volumes`"
            ),
            "{e}"
        );
    }
}
