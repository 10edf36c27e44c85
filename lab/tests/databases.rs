//! Each database image runs as a Swarm service on a lab Swarm, and its own client, from the
//! host, writes and reads back: PostgreSQL and Redis with a `local` volume, PostgreSQL again on
//! a bind mount of a replicated GlusterFS volume (as Swarm users commonly run a database on
//! shared storage; initdb's chown, fsync and renames through FUSE), and a 3-member etcd
//! cluster that founds itself and is joined member by member.
//!
//! Plain Swarm, no Berth: what is checked here is the images, their entry points and the
//! clients. (Berth runs them in `berth-chaos`.)

use std::collections::BTreeSet;
use std::time::Duration;

use berth_lab::dbclient::{self, Load};
use berth_lab::dbimage::{self, Db};
use berth_lab::gluster::{Gluster, PRIVATE_DIRS};
use berth_lab::harness::{self, Test};
use berth_lab::{Lab, Need, wait_for};

fn main() {
    harness::run(
        &[
            Need::Docker,
            Need::Root,
            Need::LabTools,
            Need::Program("apt-get", "apt"),
            Need::Program("dpkg-deb", "dpkg"),
            Need::Program("glusterd", "glusterfs-server"),
            Need::Program("mount.glusterfs", "glusterfs-client"),
        ],
        vec![Test {
            name: "postgres_redis_and_etcd_serve_their_own_clients_on_a_lab_swarm",
            body: databases,
        }],
    )
}

fn lab_with_gluster() -> Lab {
    let mut b = Lab::builder().managers(1).workers(3);
    for d in PRIVATE_DIRS {
        b = b.private_dir(d);
    }
    b.start()
}

/// Waits until `load` has `n` acknowledgements from `servers` distinct addresses, then stops
/// it and returns them; on failure, the service's logs say why.
fn acked(
    lab: &Lab,
    service: &str,
    mut load: Load,
    n: usize,
    servers: usize,
) -> Vec<dbclient::DbAck> {
    let enough = |acks: &[dbclient::DbAck]| {
        let targets: BTreeSet<&str> = acks.iter().map(|a| a.target.as_str()).collect();
        acks.len() >= n && targets.len() >= servers
    };
    let ok = wait_for(Duration::from_secs(180), || enough(&load.acks()));
    load.stop();
    let acks = load.acks();
    if !ok {
        let logs = lab
            .manager()
            .docker(&["service", "logs", "--tail", "30", service]);
        panic!(
            "{service}: {} acknowledged writes from {:?} in 180 s ({} refused); its logs:\n{}{}",
            acks.len(),
            acks.iter()
                .map(|a| a.target.as_str())
                .collect::<BTreeSet<_>>(),
            load.errors(),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    acks
}

/// Every acknowledged key is read back from `addr`, and one server acknowledged them all.
fn check(db: Db, addr: &str, port: u16, run: &str, acks: &[dbclient::DbAck]) {
    let mut c = dbclient::client(db, addr, port, run);
    let held = c
        .read_all()
        .unwrap_or_else(|e| panic!("{run}: read back from {addr}: {e}"));
    let lost: Vec<u64> = acks
        .iter()
        .map(|a| a.seq)
        .filter(|s| !held.contains(s))
        .collect();
    assert!(
        lost.is_empty(),
        "{run}: acknowledged but not held: {lost:?}"
    );
    let ids: BTreeSet<&str> = acks.iter().map(|a| a.identity.as_str()).collect();
    assert_eq!(ids.len(), 1, "{run}: acknowledged by {ids:?}");
}

fn service_node(lab: &Lab, service: &str) -> String {
    let mut node = String::new();
    let found = wait_for(Duration::from_secs(120), || {
        let out = lab.manager().docker(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.lines().find(|l| l.contains("Running")) {
            Some(l) => {
                node = l.split(' ').next().unwrap_or_default().to_string();
                true
            }
            None => false,
        }
    });
    assert!(found, "{service} never ran");
    lab.nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("{service} runs on {node}, not a lab node"))
        .addr
        .clone()
}

fn create(lab: &Lab, args: &[&str]) {
    let mut a = vec![
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--network",
        "host",
        "--constraint",
        "node.role==worker",
    ];
    a.extend_from_slice(args);
    lab.manager().docker_ok(&a);
}

fn databases() {
    let lab = lab_with_gluster();
    let workers: Vec<String> = lab.nodes[1..].iter().map(|n| n.name.clone()).collect();
    let worker_addrs: Vec<String> = lab.nodes[1..].iter().map(|n| n.addr.clone()).collect();
    let shared = lab.dir.join("shared");
    let g = Gluster::start(
        &lab,
        &workers.iter().map(String::as_str).collect::<Vec<_>>(),
        "dbshared",
        &shared,
    );
    let t = std::time::Instant::now();
    dbimage::load_into(&lab, &Db::ALL);
    eprintln!(
        "databases: images in every node after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // PostgreSQL on a local volume.
    create(
        &lab,
        &[
            "--name",
            "pg",
            "--env",
            "PGPORT=15432",
            "--mount",
            "type=volume,source=pgdata,target=/data",
            &Db::Postgres.tag(),
        ],
    );
    let acks = acked(
        &lab,
        "pg",
        Load::start(Db::Postgres, &worker_addrs, 15432, "pg"),
        40,
        1,
    );
    check(Db::Postgres, &service_node(&lab, "pg"), 15432, "pg", &acks);

    // PostgreSQL on a bind mount of the GlusterFS volume.
    let first = lab.node(&workers[0]);
    let out = first
        .command_inside("mkdir")
        .arg("-p")
        .arg(shared.join("pg"))
        .output()
        .expect("mkdir on the volume");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    create(
        &lab,
        &[
            "--name",
            "pgg",
            "--env",
            "PGPORT=15433",
            "--mount",
            &format!(
                "type=bind,source={},target=/data",
                shared.join("pg").display()
            ),
            &Db::Postgres.tag(),
        ],
    );
    let acks = acked(
        &lab,
        "pgg",
        Load::start(Db::Postgres, &worker_addrs, 15433, "pgg"),
        40,
        1,
    );
    check(
        Db::Postgres,
        &service_node(&lab, "pgg"),
        15433,
        "pgg",
        &acks,
    );

    // Redis, append-only and fsynced before each reply.
    create(
        &lab,
        &[
            "--name",
            "rd",
            "--env",
            "REDIS_PORT=16379",
            "--mount",
            "type=volume,source=rddata,target=/data",
            &Db::Redis.tag(),
        ],
    );
    let acks = acked(
        &lab,
        "rd",
        Load::start(Db::Redis, &worker_addrs, 16379, "rd"),
        40,
        1,
    );
    check(Db::Redis, &service_node(&lab, "rd"), 16379, "rd", &acks);

    // etcd: three members, one per worker; the first founds the cluster, the others join.
    let peers: Vec<String> = worker_addrs
        .iter()
        .map(|a| format!("http://{a}:12379"))
        .collect();
    create(
        &lab,
        &[
            "--name",
            "et",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--env",
            "ETCD_NAME=et-{{.Task.Slot}}",
            "--env",
            "BERTH_ETCD_FIRST=et-1",
            "--env",
            &format!("BERTH_ETCD_PEERS={}", peers.join(",")),
            "--env",
            "BERTH_ETCD_JOIN_WAIT=3",
            "--env",
            "ETCD_CLIENT_PORT=12379",
            "--env",
            "ETCD_PEER_PORT=12380",
            "--mount",
            "type=volume,source=etdata,target=/data",
            &Db::Etcd.tag(),
        ],
    );
    // All three members acknowledge writes of one cluster, and each reads them all back.
    let acks = acked(
        &lab,
        "et",
        Load::start(Db::Etcd, &worker_addrs, 12379, "et"),
        60,
        3,
    );
    for a in &worker_addrs {
        check(Db::Etcd, a, 12379, "et", &acks);
    }
    drop(g);
}
