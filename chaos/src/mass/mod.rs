//! `--slots N`: a mass failover. N stateful slots — several services of `berth-testapp
//! writer` slots, each service on one of `--backend`'s backends in turn — all on the node the
//! fault hits, every slot's writes checked like the one-slot writer's
//! ([`crate::workload::writer`]): lost acknowledged writes, two writers, time to serve, each
//! slot on its own.
//!
//! Every slot lands on the faulted node because the other workers are paused (`docker node
//! update --availability pause`) while the slots are deployed and made active again before
//! the fault: the engine and Swarm place nothing on a paused node, and neither moves a
//! running task when a node becomes active.
//!
//! A slot's tasks name themselves `SLOT/NODE/TASKID` (`BERTH_TASK`): under Berth `SLOT` is the
//! slot service (`mb7x0-3`), under plain Swarm the service and Swarm's task slot
//! (`ms7x0-3`), so every acknowledgement and record is the slot's, whoever wrote it.
//!
//! The run's `seconds_to_serve` is the last slot's (`null` if any slot never served); its
//! `lost_acked`, `double_writers` and `acked` are the sums over the slots. Per service it
//! reports the most slots unavailable at once (from the writers' acknowledgements: a slot is
//! unavailable through every gap over [`verdict::GAP`]), against `berth.max-unavailable` and
//! the slots the fault itself took down.

pub mod judge;

use judge::percentile;
pub use judge::{MassReport, ServiceReport, combine, layout, max_concurrent, outages};

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use berth_lab::swarm::{IMAGE, Role};
use berth_lab::wait_for;

use crate::checker::Checker;
use crate::cluster::Cluster;
use crate::fault::{self, Fault, Timing};
use crate::run::RunResult;
use crate::verdict::{self, Ack, Evidence, Window, Write};
use crate::workload::writer::{parse_ack, parse_records, read_copies};
use crate::workload::{Backend, System, worker_service_create};

/// `berth.max-unavailable` of every service.
const MAX_UNAVAILABLE: u32 = 2;
/// Writes each slot acknowledges before the fault.
const WARM_UP: usize = 10;

/// How a mass run is made.
pub struct MassSetup<'a> {
    pub checker: &'a Checker,
    pub system: System,
    /// Backends the services take in turn (Berth); plain Swarm's storage.
    pub backends: &'a [Backend],
    pub slots: u32,
    pub fault: Fault,
    pub seed: u64,
    pub timing: Timing,
    pub serve_limit: Duration,
}

/// One slot of a deployment.
struct Slot {
    /// `SLOT` of its tasks' names, and under Berth its slot service.
    key: String,
    service: usize,
    /// Under Swarm, its service and task slot; under Berth, its slot service and 1.
    swarm_service: String,
    task_slot: u64,
    volume: Option<String>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn workers(c: &Cluster) -> Vec<String> {
    c.lab
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| n.name.clone())
        .collect()
}

fn availability(c: &Cluster, nodes: &[String], what: &str) {
    for n in nodes {
        c.manager()
            .docker_ok(&["node", "update", "--availability", what, n]);
    }
}

/// Every running task of `service` as (task slot, node name, container).
fn running_tasks(c: &Cluster, service: &str) -> Vec<(u64, String, String)> {
    let filter = format!(
        "%7B%22service%22:%5B%22{service}%22%5D,%22desired-state%22:%5B%22running%22%5D%7D"
    );
    let Ok(body) = c
        .manager()
        .engine
        .api_get(&format!("/tasks?filters={filter}"))
    else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(tasks)) = serde_json::from_str(&body) else {
        return Vec::new();
    };
    tasks
        .iter()
        .filter(|t| t["Status"]["State"] == "running")
        .filter_map(|t| {
            let node_id = t["NodeID"].as_str()?;
            let name = c.ids.iter().find(|(_, id)| *id == node_id)?.0.clone();
            let container = t["Status"]["ContainerStatus"]["ContainerID"].as_str()?;
            Some((t["Slot"].as_u64()?, name, container.to_string()))
        })
        .collect()
}

fn slot_of(task: &str) -> &str {
    task.split('/').next().unwrap_or("")
}

pub fn one(c: &mut Cluster, s: &MassSetup) -> Result<RunResult> {
    let started = Instant::now();
    let id = match s.system {
        System::Berth => format!("mb{}", s.seed),
        System::Swarm => format!("ms{}", s.seed),
    };
    let all = workers(c);
    let target = all[(s.seed as usize) % all.len()].clone();
    let others: Vec<String> = all.iter().filter(|w| **w != target).cloned().collect();
    let manager = fault::prepare(c, s.fault, s.system)?;
    let layout = layout(s.slots, s.backends);
    let since = Instant::now();
    availability(c, &others, "pause");
    let mut slots = Vec::new();
    let mut services = Vec::new();
    for (j, &(n, backend)) in layout.iter().enumerate() {
        let name = format!("{id}x{j}");
        let mut args = worker_service_create("1s");
        match s.system {
            System::Berth => {
                args.extend(
                    [
                        "--env",
                        "BERTH_TASK={{.Service.Name}}/{{.Node.Hostname}}/{{.Task.ID}}",
                        "--name",
                        &name,
                        "--replicas",
                        "0",
                        "--label",
                        "berth.stateful=true",
                        "--label",
                        &format!("berth.replicas={n}"),
                        "--label",
                        &format!("berth.volume={name}-{{slot}}"),
                        "--label",
                        &format!("berth.backend={backend}"),
                        "--label",
                        "berth.failover=move",
                        "--label",
                        &format!("berth.max-unavailable={MAX_UNAVAILABLE}"),
                        // Ten slots of a service on one node (a stateful service's slots
                        // keep to a node each by default).
                        "--label",
                        "berth.anti-affinity=false",
                        "--update-order",
                        "start-first",
                        "--mount",
                        &format!(
                            "type=volume,source={name}-{{{{.Task.Slot}}}},target=/data,volume-driver=berth,{}",
                            backend.volume_opts()
                        ),
                    ]
                    .map(String::from),
                );
                for k in 1..=u64::from(n) {
                    slots.push(Slot {
                        key: format!("{name}-{k}"),
                        service: j,
                        swarm_service: format!("{name}-{k}"),
                        task_slot: 1,
                        volume: Some(format!("{name}-{k}")),
                    });
                }
            }
            System::Swarm => {
                let dir = match backend {
                    Backend::Shared => c.shared_dirs(&name, n)?,
                    _ => String::new(),
                };
                let Some((mount, _)) =
                    backend.swarm_mount(&format!("{name}-{{{{.Task.Slot}}}}"), &dir)
                else {
                    bail!("plain Swarm has no {backend} storage");
                };
                args.extend(
                    [
                        "--env",
                        "BERTH_TASK={{.Service.Name}}-{{.Task.Slot}}/{{.Node.Hostname}}/{{.Task.ID}}",
                        "--name",
                        &name,
                        "--replicas",
                        &n.to_string(),
                        "--mount",
                        &mount,
                    ]
                    .map(String::from),
                );
                for k in 1..=u64::from(n) {
                    slots.push(Slot {
                        key: format!("{name}-{k}"),
                        service: j,
                        swarm_service: name.clone(),
                        task_slot: k,
                        volume: None,
                    });
                }
            }
        }
        args.extend([IMAGE, "writer", "/data", &s.checker.addr, &id].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.manager().docker_ok(&args);
        services.push((name, n, backend));
    }
    let acks_of = |checker: &Checker| -> (BTreeMap<String, Vec<Ack>>, Vec<String>, usize) {
        let mut by_slot: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
        let mut problems = Vec::new();
        for l in checker.lines_since(since) {
            match parse_ack(&l.text, &id) {
                Ok(Some((seq, task, ms))) => by_slot
                    .entry(slot_of(&task).to_string())
                    .or_default()
                    .push(Ack {
                        key: format!("{seq} {task}"),
                        task,
                        written_ms: ms,
                        at: l.at,
                    }),
                Ok(None) => {}
                Err(why) => problems.push(format!("malformed acknowledgement: {why}")),
            }
        }
        (by_slot, problems, checker.torn_since(since).len())
    };
    let on_target = |c: &Cluster| {
        slots.iter().all(|sl| {
            running_tasks(c, &sl.swarm_service)
                .iter()
                .any(|(k, node, _)| *k == sl.task_slot && *node == target)
        })
    };
    let warm = wait_for(Duration::from_secs(300), || {
        let (by_slot, _, _) = acks_of(s.checker);
        slots
            .iter()
            .all(|sl| by_slot.get(&sl.key).is_some_and(|a| a.len() >= WARM_UP))
    }) && on_target(c);
    availability(c, &others, "active");
    if !warm {
        bail!(
            "{id}: not every one of {} slots acknowledged {WARM_UP} writes on {target} (logs in {})",
            s.slots,
            c.logs().display()
        );
    }
    let epochs_before: Vec<Option<u64>> = slots
        .iter()
        .map(|sl| sl.volume.as_ref().and_then(|v| c.volume_epoch(v)))
        .collect();
    std::thread::sleep(Duration::from_millis(1000 + (s.seed % 3) * 1000));
    let (by_slot, _, _) = acks_of(s.checker);
    let before: BTreeSet<String> = by_slot.values().flatten().map(|a| a.task.clone()).collect();
    let fault_ms = now_ms();
    let t0 = Instant::now();
    let mut inj = fault::inject(c, s.fault, &target, manager, s.timing)?;
    loop {
        inj.tick(c)?;
        let (by_slot, _, _) = acks_of(s.checker);
        let all_new = slots.iter().all(|sl| {
            by_slot
                .get(&sl.key)
                .is_some_and(|acks| acks.iter().any(|a| a.at >= t0 && !before.contains(&a.task)))
        });
        if all_new || t0.elapsed() > s.serve_limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (swarm_leader_killed, killed_manager) = (inj.swarm_leader_killed, inj.manager.clone());
    let mut notes = inj.finish(c)?;
    std::thread::sleep(Duration::from_secs(5));
    // Acknowledgements first, then the copies (see `run::one`).
    let (by_slot, ack_problems, torn_acks) = acks_of(s.checker);
    let end = Instant::now();
    let (copies, copy_problems, torn_copies) = read_copies(&c.lab.dir, &id);
    let window = Window {
        fault: t0,
        fault_ms,
        end,
    };
    let mut verdicts = Vec::new();
    let mut torn = torn_acks + torn_copies;
    let mut per_service: BTreeMap<usize, Vec<(i64, i64)>> = BTreeMap::new();
    let mut fences = Vec::new();
    for (i, sl) in slots.iter().enumerate() {
        let acks = by_slot.get(&sl.key).cloned().unwrap_or_default();
        let surviving = running_tasks(c, &sl.swarm_service)
            .into_iter()
            .find(|(k, _, _)| *k == sl.task_slot)
            .ok_or_else(|| format!("no task of {} runs", sl.key))
            .and_then(|(_, node, container)| {
                let out = c.lab.node(&node).docker(&[
                    "exec",
                    &container,
                    "/berth-testapp",
                    "cat",
                    "/data/records",
                ]);
                if out.status.success() {
                    Ok(parse_records(&String::from_utf8_lossy(&out.stdout), &id))
                } else {
                    Err(format!(
                        "cat /data/records in {container} on {node}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            });
        let mut writes: Vec<Write> = copies
            .iter()
            .filter(|w| slot_of(&w.task) == sl.key)
            .cloned()
            .collect();
        if let Ok((recs, t)) = &surviving {
            torn += t;
            writes.extend(recs.iter().map(|(_, task, ms)| Write {
                task: task.clone(),
                written_ms: *ms,
            }));
        }
        let mut problems = ack_problems.clone();
        if i == 0 {
            problems.extend(copy_problems.iter().cloned());
        }
        let v = verdict::judge(
            &Evidence {
                acks: acks.clone(),
                surviving: surviving.map(|(recs, _)| {
                    recs.into_iter()
                        .map(|(seq, task, _)| format!("{seq} {task}"))
                        .collect()
                }),
                writes,
                problems: if i == 0 { problems } else { Vec::new() },
            },
            window,
        );
        let ms = |at: Instant| -> i64 {
            if at >= t0 {
                at.duration_since(t0).as_millis() as i64
            } else {
                -(t0.duration_since(at).as_millis() as i64)
            }
        };
        let mut arrivals: Vec<i64> = acks.iter().map(|a| ms(a.at)).collect();
        arrivals.sort();
        let from = arrivals
            .iter()
            .copied()
            .filter(|&a| a <= 0)
            .max()
            .unwrap_or(0);
        per_service
            .entry(sl.service)
            .or_default()
            .extend(outages(&arrivals, from, ms(end)));
        if let (Some(a), Some(b)) = (
            epochs_before[i],
            sl.volume.as_ref().and_then(|v| c.volume_epoch(v)),
        ) {
            fences.push(b.saturating_sub(a));
        }
        if v.seconds_to_serve.is_none() {
            notes.push(format!("{} never served again", sl.key));
        }
        verdicts.push(v);
    }
    let services_report: Vec<ServiceReport> = services
        .iter()
        .enumerate()
        .map(|(j, (name, n, backend))| {
            let seen = max_concurrent(per_service.get(&j).map(Vec::as_slice).unwrap_or(&[]));
            let budget = (s.system == System::Berth).then_some(MAX_UNAVAILABLE);
            // Every slot of the service was on the faulted node (the others were paused).
            let lost_by_fault = *n;
            ServiceReport {
                service: name.clone(),
                backend: *backend,
                slots: *n,
                max_unavailable: budget,
                slots_on_faulted_node: lost_by_fault,
                max_unavailable_seen: seen,
                budget_honoured: seen <= lost_by_fault.max(budget.unwrap_or(u32::MAX)),
            }
        })
        .collect();
    let mut secs: Vec<f64> = verdicts.iter().filter_map(|v| v.seconds_to_serve).collect();
    secs.sort_by(f64::total_cmp);
    let mass = MassReport {
        slots: s.slots,
        slots_served: secs.len() as u32,
        slot_seconds: verdicts.iter().map(|v| v.seconds_to_serve).collect(),
        p50_slot_seconds: percentile(&secs, 50.0),
        p99_slot_seconds: percentile(&secs, 99.0),
        services: services_report,
        max_fences: fences.iter().copied().max(),
    };
    let verdict = combine(&verdicts);
    for (name, _, _) in &services {
        c.manager().docker_ok(&["service", "rm", name]);
    }
    let gone = wait_for(Duration::from_secs(120), || {
        slots
            .iter()
            .all(|sl| running_tasks(c, &sl.swarm_service).is_empty())
    });
    if !gone {
        bail!("{id}: tasks outlived their services");
    }
    let storage = match s.system {
        System::Berth => format!(
            "berth {}",
            s.backends
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("+")
        ),
        System::Swarm => format!("{} ({} slots)", s.backends[0], s.slots),
    };
    Ok(RunResult {
        workload: "writer",
        backend: s.backends[0],
        fault: s.fault,
        system: s.system,
        seed: s.seed,
        fences: mass.max_fences,
        verdict,
        lag_ms: None,
        lost_window_ms: None,
        torn,
        node: target,
        manager: killed_manager,
        swarm_leader_killed,
        storage,
        notes,
        mass: Some(mass),
        node_back: None,
        containers_stopped: None,
        run_seconds: started.elapsed().as_secs_f64(),
    })
}
