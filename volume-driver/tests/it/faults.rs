//! Agents killed (SIGKILL, no cleanup) in the middle of a `local` move: the receiving agent and
//! then the sending one. In both cases the source keeps every byte, the receiver holds only
//! whole verified files, and the move completes by resuming once the dead agent is back.
//!
//! Both agents run with `--transfer-rate 4MiB` so a move of a few MiB takes long enough to be
//! interrupted on purpose, on any machine. The first test's cluster also runs with a bearer
//! token, which agents present to each other's transfer endpoints.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_volume::transfer;
use serde_json::{Value, json};

use crate::support::{TwoNodes, api, wait_until};

const FILES: usize = 24;
const FILE_BYTES: usize = 1 << 20;

fn ok(v: &Value) {
    assert_eq!(v["Err"], "", "expected success, got {v}");
}

fn mount(t: &crate::support::AgentSvc, name: &str, caller: &str) -> PathBuf {
    let v = t.call(
        "/VolumeDriver.Mount",
        &json!({"Name": name, "ID": caller}).to_string(),
    );
    ok(&v);
    PathBuf::from(v["Mountpoint"].as_str().expect("mountpoint"))
}

fn unmount(t: &crate::support::AgentSvc, name: &str, caller: &str) {
    ok(&t.call(
        "/VolumeDriver.Unmount",
        &json!({"Name": name, "ID": caller}).to_string(),
    ));
}

fn move_to(t: &TwoNodes, id: &str, node: &str) {
    let body = json!({"primary": node}).to_string();
    let (st, _, v) = api(
        &t.control,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &t.headers(),
        &body,
    );
    assert_eq!(st, 200, "{v}");
}

/// Writes `n` files of distinct bytes named `{prefix}NN`.
fn write_files(dir: &Path, prefix: &str, n: usize) {
    for i in 0..n {
        let seed = (prefix.len() * 1000 + i) as u32;
        let bytes: Vec<u8> = (0..FILE_BYTES as u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect();
        std::fs::write(dir.join(format!("{prefix}{i:02}")), bytes).expect("write");
    }
}

fn data_dir(root: &Path, id: &str) -> PathBuf {
    root.join("datasets").join(id).join("data")
}

fn epoch_on(root: &Path, id: &str) -> Option<u64> {
    std::fs::read_to_string(root.join("datasets").join(id).join("epoch"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(60), f);
}

/// A rate-limited two-node cluster with volume `name` on A holding `FILES` files, unmounted.
struct Setup {
    t: TwoNodes,
    /// A's mountpoint.
    mp_a: PathBuf,
    id: String,
    /// What A holds.
    on_a: transfer::Manifest,
}

fn setup(name: &str, secure: bool) -> Setup {
    let t = TwoNodes::start_with(&["--transfer-rate", "4MiB"], secure);
    ok(&t.a.call(
        "/VolumeDriver.Create",
        &json!({"Name": name, "Opts": {}}).to_string(),
    ));
    let mp_a = mount(&t.a, name, "c1");
    write_files(&mp_a, "a", FILES);
    unmount(&t.a, name, "c1");
    let id = t.dataset(name)["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    let on_a = transfer::manifest(&mp_a).expect("source manifest");
    Setup { t, mp_a, id, on_a }
}

/// Every file the receiver holds is whole and byte-equal to the source's; returns their inodes.
fn only_whole_files(dest: &Path, source: &transfer::Manifest) -> BTreeMap<String, u64> {
    let want: BTreeMap<&str, &Option<String>> = source
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.blake3))
        .collect();
    let mut held = BTreeMap::new();
    for f in transfer::manifest(dest).expect("receiver manifest").files {
        if let Some(expected) = want.get(f.path.as_str()) {
            assert_eq!(&f.blake3, *expected, "{} landed torn", f.path);
            let ino = std::fs::metadata(dest.join(&f.path)).expect("md").ino();
            held.insert(f.path, ino);
        }
    }
    held
}

#[test]
fn agents_killed_mid_transfer_resume_and_never_touch_the_source() {
    let Setup {
        mut t,
        mp_a,
        id,
        on_a,
    } = setup("big", true);

    // 1. The receiver dies. B starts pulling by itself (its reconcile pass) once it is primary.
    move_to(&t, &id, "node-b");
    let dest_b = data_dir(&t.b.data_root, &id);
    let landed = |d: &Path| {
        transfer::scan(d, None).map_or(0, |m| {
            m.files
                .iter()
                .filter(|f| !f.path.starts_with(".berth-partial"))
                .count()
        })
    };
    wait_for("B to land a few files", || landed(&dest_b) >= 3);
    t.b.kill();
    let before_restart = only_whole_files(&dest_b, &on_a);
    assert!(
        before_restart.len() < FILES,
        "the kill came after the move finished; nothing was tested"
    );
    assert_eq!(
        epoch_on(&t.b.data_root, &id),
        None,
        "B never claimed a copy it does not have"
    );
    assert_eq!(transfer::manifest(&mp_a).expect("m"), on_a, "source intact");

    t.b.restart();
    wait_for("B to finish the move", || {
        epoch_on(&t.b.data_root, &id) == Some(2)
    });
    let mp_b = mount(&t.b, "big", "c2");
    assert_eq!(
        transfer::manifest(&mp_b).expect("m"),
        on_a,
        "B has A's bytes"
    );
    let after = only_whole_files(&mp_b, &on_a);
    for (path, ino) in &before_restart {
        assert_eq!(
            after.get(path),
            Some(ino),
            "{path} was copied again instead of kept"
        );
    }

    // 2. The sender dies. New data on B, then a move back to A that B is serving when killed.
    write_files(&mp_b, "bb", FILES / 2);
    unmount(&t.b, "big", "c2");
    let on_b = transfer::manifest(&mp_b).expect("source manifest");
    move_to(&t, &id, "node-a");
    let dest_a = data_dir(&t.a.data_root, &id);
    let new_on_a = |d: &Path| {
        transfer::scan(d, None).map_or(0, |m| {
            m.files.iter().filter(|f| f.path.starts_with("bb")).count()
        })
    };
    wait_for("A to land some of B's new files", || new_on_a(&dest_a) >= 2);
    t.b.kill();
    assert!(new_on_a(&dest_a) < FILES / 2, "the kill came too late");
    assert_eq!(transfer::manifest(&mp_b).expect("m"), on_b, "source intact");
    only_whole_files(&dest_a, &on_b);
    // While the source is down a mount on A says why it cannot proceed, and changes nothing.
    let e =
        t.a.call("/VolumeDriver.Mount", r#"{"Name":"big","ID":"c3"}"#);
    let msg = e["Err"].as_str().unwrap_or_default();
    assert!(
        msg.contains("copying dataset") && msg.contains("the source is intact"),
        "{e}"
    );
    assert_ne!(epoch_on(&t.a.data_root, &id), Some(3));

    t.b.restart();
    wait_for("A to finish the move", || {
        epoch_on(&t.a.data_root, &id) == Some(3)
    });
    let mp_a = mount(&t.a, "big", "c4");
    assert_eq!(
        transfer::manifest(&mp_a).expect("m"),
        on_b,
        "A has B's bytes"
    );
}

#[test]
fn moving_back_from_a_node_that_died_mid_pull_keeps_every_byte() {
    let Setup {
        mut t,
        mp_a,
        id,
        on_a,
    } = setup("back", false);
    move_to(&t, &id, "node-b");
    let dest_b = data_dir(&t.b.data_root, &id);
    wait_for("B to start landing files", || {
        transfer::scan(&dest_b, None).is_ok_and(|m| m.files.len() >= 2)
    });
    t.b.kill();
    // B never finished, so it never took a write: A's copy is still the newest, and moving
    // back must neither pull B's partial copy nor prune A's files to match it.
    move_to(&t, &id, "node-a");
    assert_eq!(t.dataset("back")["epoch"], 3);
    t.b.restart(); // B is reachable again, partial copy and all
    let mp = mount(&t.a, "back", "c2");
    assert_eq!(mp, mp_a);
    assert_eq!(transfer::manifest(&mp).expect("m"), on_a, "every byte kept");
}
