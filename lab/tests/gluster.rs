//! The lab's GlusterFS volume fails as a real one does: replica 3 across three workers, mounted
//! on every node; a worker killed takes its brick away, and the volume stays readable and
//! writable on the others; the worker back, its mount serves what was written without it.

use std::time::Duration;

use berth_lab::gluster::{self, Gluster, PRIVATE_DIRS};
use berth_lab::harness::{self, Test};
use berth_lab::{Lab, LabNode, Need, wait_for};

fn main() {
    harness::run(
        &[
            Need::Docker,
            Need::Root,
            Need::LabTools,
            Need::Program("glusterd", "glusterfs-server"),
            Need::Program("mount.glusterfs", "glusterfs-client"),
        ],
        vec![Test {
            name: "replica_3_volume_survives_a_killed_worker",
            body: replica_3_volume_survives_a_killed_worker,
        }],
    )
}

/// `sh -c script` inside the node (its mounts); its stdout, or the failure.
fn sh_in(node: &LabNode, script: &str) -> Result<String, String> {
    let out = node
        .command_inside("sh")
        .args(["-c", script])
        .output()
        .expect("nsenter runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn replica_3_volume_survives_a_killed_worker() {
    let mut b = Lab::builder().managers(1).workers(3);
    for d in PRIVATE_DIRS {
        b = b.private_dir(d);
    }
    let mut lab = b.start();
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    let (m1, w1, w2, w3) = (&names[0], &names[1], &names[2], &names[3]);
    let mp = lab.dir.join("shared");
    let g = Gluster::start(&lab, &[w1, w2, w3], "labshared", &mp);
    let mp = mp.display().to_string();

    // Every node has its own FUSE mount; the host has none.
    for n in &lab.nodes {
        let fs = sh_in(n, &format!("stat -f -c %T {mp}")).expect("stat");
        assert!(fs.contains("fuse"), "{}: {mp} is {fs}", n.name);
    }
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&format!(" {mp} ")),
        "the host must not see the nodes' mounts"
    );

    sh_in(lab.node(w1), &format!("echo before > {mp}/before && sync")).expect("write on w1");
    assert_eq!(
        sh_in(lab.node(m1), &format!("cat {mp}/before")).expect("read on m1"),
        "before"
    );
    let w1_brick = gluster::brick(lab.node(w1));
    assert!(
        w1_brick.join("before").exists(),
        "w1's brick holds a replica"
    );

    lab.node_mut(w1).kill();

    // The two bricks left are a majority: reads and writes go on, on any node.
    let after = wait_for(Duration::from_secs(30), || {
        sh_in(
            lab.node(w2),
            &format!("echo after > {mp}/after && sync && cat {mp}/before"),
        )
        .is_ok_and(|s| s == "before")
    });
    assert!(after, "w2 could not write and read with w1 dead");
    assert_eq!(
        sh_in(lab.node(m1), &format!("cat {mp}/after")).expect("read on m1"),
        "after"
    );
    assert_eq!(
        sh_in(lab.node(w3), &format!("cat {mp}/after")).expect("read on w3"),
        "after"
    );
    assert!(
        !w1_brick.join("after").exists(),
        "a write made while w1 was dead reached its brick: the brick did not go away"
    );

    // Back, w1 serves the write it missed (read from the good replicas, then healed).
    lab.node_mut(w1).start();
    g.rejoin(&lab, w1);
    assert_eq!(
        sh_in(lab.node(w1), &format!("cat {mp}/after")).expect("read on w1"),
        "after"
    );
    let healed = wait_for(Duration::from_secs(60), || w1_brick.join("after").exists());
    assert!(healed, "self-heal never refilled w1's brick");
    drop(g);
}
