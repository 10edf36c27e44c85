//! Berth's placement of unlabelled services against Swarm's own scheduler, on a real 4-node
//! Swarm (one dockerd per network namespace). For each scenario the test creates the service
//! with 0 replicas, captures `docker node/service inspect` and the `/tasks` API, asks Berth
//! where N replicas go, scales the real service to N, and compares node by node.
//!
//! The last scenario scales up a service whose tasks are uneven, where SwarmKit's forward fill
//! differs from a greedy "least loaded first" (see `schedule/swarm_fill.rs`).
//!
//! The scenarios are built so that Swarm's answer is unique: every node starts with a different
//! number of tasks (so "fewest tasks" never ties), and no placement-preference branch is left
//! without a feasible node (where SwarmKit's branch split depends on Go's map order and on a
//! stale per-branch count, and Berth deliberately differs: it keeps the branches even).

use std::collections::BTreeMap;

use berth_lab::harness::{self, Test};
use berth_lab::swarm::IMAGE;
use berth_lab::{Lab, LabNode, Need, wait_for};
use berth_scheduler::ingest;
use berth_scheduler::model::{Cluster, Mode};
use berth_scheduler::schedule;
use serde_json::Value;

/// Tasks per hostname, and the pending tasks' messages.
type Assignment = (BTreeMap<String, u32>, Vec<String>);

/// The live cluster as Berth's CLI would read it.
fn capture(m: &LabNode) -> Cluster {
    let ids = m.docker_ok(&["node", "ls", "-q"]);
    let ids: Vec<&str> = ids.lines().collect();
    let nodes = m.docker_ok(&[&["node", "inspect"][..], &ids].concat());
    let sids = m.docker_ok(&["service", "ls", "-q"]);
    let sids: Vec<&str> = sids.lines().collect();
    let services = m.docker_ok(&[&["service", "inspect"][..], &sids].concat());
    let tasks = m.api_get("/tasks");
    Cluster {
        nodes: ingest::nodes("nodes.json", &nodes).expect("real node JSON parses"),
        services: ingest::services("services.json", &services).expect("real service JSON parses"),
        tasks: ingest::tasks("tasks.json", &tasks).expect("real task JSON parses"),
        datasets: Vec::new(),
    }
}

fn hostnames(c: &Cluster) -> BTreeMap<String, String> {
    c.nodes
        .iter()
        .map(|n| (n.id.to_string(), n.hostname.clone()))
        .collect()
}

/// Per-hostname task counts of a service as Swarm assigned them, and how many are pending
/// (with Swarm's error message).
fn swarm_assignment(
    m: &LabNode,
    service: &str,
    replicas: usize,
    names: &BTreeMap<String, String>,
) -> Assignment {
    let filter = format!(
        "%7B%22service%22:%5B%22{service}%22%5D,%22desired-state%22:%5B%22running%22%5D%7D"
    );
    let mut result = (BTreeMap::new(), Vec::new());
    let settled = wait_for(std::time::Duration::from_secs(60), || {
        let tasks: Value = serde_json::from_str(&m.api_get(&format!("/tasks?filters={filter}")))
            .expect("tasks JSON");
        let tasks = tasks.as_array().cloned().unwrap_or_default();
        let mut counts = BTreeMap::new();
        let mut pending = Vec::new();
        for t in &tasks {
            match t["NodeID"].as_str().filter(|n| !n.is_empty()) {
                Some(n) => {
                    *counts
                        .entry(names.get(n).cloned().unwrap_or_else(|| n.to_string()))
                        .or_insert(0) += 1
                }
                None => {
                    if let Some(err) = t["Status"]["Err"].as_str() {
                        pending.push(err.to_string());
                    }
                }
            }
        }
        let settled = counts.values().sum::<u32>() as usize + pending.len() == replicas;
        result = (counts, pending);
        settled
    });
    assert!(settled, "swarm did not settle {service}: {result:?}");
    result
}

/// Berth's per-hostname counts of the service's new tasks, and its pending messages.
fn berth_assignment(cluster: &Cluster, service: &str, replicas: u64) -> Assignment {
    let mut c = cluster.clone();
    let svc = c
        .services
        .iter_mut()
        .find(|s| s.name == service)
        .expect("service captured");
    svc.mode = Mode::Replicated { replicas };
    let names = hostnames(&c);
    let plan = schedule::plan(&c).expect("real cluster plans");
    let mut counts = BTreeMap::new();
    for p in plan.placements.iter().filter(|p| p.service == service) {
        *counts.entry(names[p.node.as_str()].clone()).or_insert(0) += 1;
    }
    (
        counts,
        plan.pending
            .iter()
            .filter(|p| p.service == service)
            .map(|p| p.message())
            .collect(),
    )
}

/// Creates `name` with 0 replicas, predicts N with Berth, scales to N, returns both answers.
fn compare(lab: &Lab, name: &str, args: &[&str], replicas: u64) -> (Assignment, Assignment) {
    let m = lab.manager();
    m.docker_ok(
        &[
            &[
                "service",
                "create",
                "--detach",
                "--quiet",
                "--name",
                name,
                "--replicas",
                "0",
            ][..],
            args,
            &[IMAGE, "sleep", "86400"],
        ]
        .concat(),
    );
    let before = capture(m);
    let berth = berth_assignment(&before, name, replicas);
    m.docker_ok(&[
        "service",
        "scale",
        "--detach",
        &format!("{name}={replicas}"),
    ]);
    let swarm = swarm_assignment(m, name, replicas as usize, &hostnames(&before));
    eprintln!(
        "{name}: berth {:?} pending {:?}\n{name}: swarm {:?} pending {:?}",
        berth.0, berth.1, swarm.0, swarm.1
    );
    (berth, swarm)
}

fn main() {
    harness::run(
        &[Need::Docker, Need::Root, Need::LabTools],
        vec![Test {
            name: "unlabelled_services_land_where_swarm_puts_them",
            body: unlabelled_services_land_where_swarm_puts_them,
        }],
    )
}

fn unlabelled_services_land_where_swarm_puts_them() {
    let lab = Lab::start(4);
    let m = lab.manager();
    let host = |i: usize| lab.nodes[i].name.clone();
    for (i, zone) in [(1, "a"), (2, "b"), (3, "a")] {
        m.docker_ok(&[
            "node",
            "update",
            "--label-add",
            &format!("zone={zone}"),
            &host(i),
        ]);
    }
    // Distinct task totals per node (0, 1, 2, 3) so Swarm's "fewest tasks" never ties.
    for (i, n) in [(1usize, 1u64), (2, 2), (3, 3)] {
        let name = format!("filler{i}");
        let constraint = format!("node.hostname=={}", host(i));
        m.docker_ok(&[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            &name,
            "--replicas",
            &n.to_string(),
            "--constraint",
            &constraint,
            IMAGE,
            "sleep",
            "86400",
        ]);
        let names = hostnames(&capture(m));
        swarm_assignment(m, &name, n as usize, &names);
    }

    // Spread by this service's tasks, then by all tasks, with a constraint and a per-node cap.
    let (berth, swarm) = compare(
        &lab,
        "db",
        &[
            "--constraint",
            "node.role==worker",
            "--replicas-max-per-node",
            "2",
        ],
        5,
    );
    assert_eq!(berth, swarm);
    assert_eq!(
        berth.0,
        BTreeMap::from([(host(1), 2), (host(2), 2), (host(3), 1)])
    );

    // A placement preference over zones; the manager (no zone label) is its own "" branch.
    let (berth, swarm) = compare(
        &lab,
        "web",
        &["--placement-pref", "spread=node.labels.zone"],
        6,
    );
    assert_eq!(berth, swarm);
    assert_eq!(
        berth.0,
        BTreeMap::from([(host(0), 2), (host(1), 1), (host(2), 2), (host(3), 1)])
    );

    // Reservations: one fits per node, the fifth stays pending on both.
    let memory: i64 = m
        .docker_ok(&[
            "node",
            "inspect",
            &host(0),
            "--format",
            "{{.Description.Resources.MemoryBytes}}",
        ])
        .parse()
        .expect("memory");
    let reserve = format!("{}", memory * 6 / 10);
    let (berth, swarm) = compare(&lab, "big", &["--reserve-memory", &reserve], 5);
    assert_eq!(berth.0, swarm.0);
    assert_eq!(berth.0.values().copied().collect::<Vec<_>>(), [1, 1, 1, 1]);
    assert_eq!(berth.1, ["0/4 nodes available: 4 insufficient memory"]);
    assert_eq!(
        swarm.1,
        ["no suitable node (insufficient resources on 4 nodes)"]
    );

    // Scaling up a service whose tasks are uneven: SwarmKit's first pass fills forward and
    // never returns to the first node, so the result is far from even, and Berth's default
    // must be the same. Pause the other nodes, put 5 tasks on the last one, resume, scale.
    for i in 0..3 {
        m.docker_ok(&["node", "update", "--availability", "pause", &host(i)]);
    }
    m.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        "uneven",
        "--replicas",
        "5",
        IMAGE,
        "sleep",
        "86400",
    ]);
    swarm_assignment(m, "uneven", 5, &hostnames(&capture(m)));
    for i in 0..3 {
        m.docker_ok(&["node", "update", "--availability", "active", &host(i)]);
    }
    let before = capture(m);
    let berth = berth_assignment(&before, "uneven", 15);
    m.docker_ok(&["service", "scale", "--detach", "uneven=15"]);
    let swarm = swarm_assignment(m, "uneven", 15, &hostnames(&before));
    eprintln!("uneven: berth {:?}\nuneven: swarm {:?}", berth.0, swarm.0);
    assert_eq!(berth, swarm);
    let lo = berth.0.values().min().copied().unwrap_or(0);
    let hi = berth.0.values().max().copied().unwrap_or(0);
    assert!(hi - lo >= 2, "the forward fill is exercised: {:?}", berth.0);
}
