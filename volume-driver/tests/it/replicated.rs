//! `backend=replicated` through the real binary: the standby catches up at Unmount and on the
//! ship interval while mounted, its lag is in the volume record, a dead primary's data is
//! promoted from the standby, and the old primary, back, is fenced and rejoins as a standby
//! with what it wrote past the promoted position discarded.

use std::path::Path;
use std::time::Duration;

use berth_volume::transfer;
use serde_json::{Value, json};

use crate::support::{AgentSvc, TwoNodes, api, api_after_lease, wait_until};

fn ok(v: &Value) {
    assert_eq!(v["Err"], "", "expected success, got {v}");
}

fn mount(a: &AgentSvc, name: &str, caller: &str) -> Value {
    a.call(
        "/VolumeDriver.Mount",
        &json!({"Name": name, "ID": caller}).to_string(),
    )
}

fn unmount(a: &AgentSvc, name: &str, caller: &str) {
    ok(&a.call(
        "/VolumeDriver.Unmount",
        &json!({"Name": name, "ID": caller}).to_string(),
    ));
}

fn record(t: &TwoNodes, name: &str) -> Value {
    let (st, _, v) = api(
        &t.control,
        "GET",
        &format!("/v1/berth/volumes/{name}"),
        &[],
        "",
    );
    assert_eq!(st, 200, "{v}");
    v
}

fn standby<'a>(v: &'a Value, node: &str) -> &'a Value {
    v["standbys"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["node"] == node))
        .unwrap_or(&Value::Null)
}

fn copy(root: &Path, id: &str) -> std::path::PathBuf {
    root.join("datasets").join(id).join("data")
}

fn marker(root: &Path, id: &str, which: &str) -> Option<u64> {
    std::fs::read_to_string(root.join("datasets").join(id).join(which))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_replicated_volume_survives_its_primary_and_the_old_primary_rejoins_fenced() {
    let mut t = TwoNodes::start_with(&["--ship-interval", "200ms"], false);
    ok(&t.a.call(
        "/VolumeDriver.Create",
        r#"{"Name":"rep","Opts":{"backend":"replicated"}}"#,
    ));
    let v = record(&t, "rep");
    assert_eq!(
        (v["backend"].as_str(), v["replicas"].as_u64()),
        (Some("replicated"), Some(2))
    );
    assert_eq!(
        standby(&v, "node-b")["epoch"],
        Value::Null,
        "nothing shipped yet: {v}"
    );
    let id = v["dataset_id"].as_str().expect("id").to_string();

    // At Unmount the standby ends up equal to the primary, before the Unmount answers.
    let mp = mount(&t.a, "rep", "c1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    for i in 0..20 {
        std::fs::write(format!("{mp}/f{i:02}"), vec![i as u8; 50_000]).expect("write");
    }
    unmount(&t.a, "rep", "c1");
    let on_a = transfer::manifest(Path::new(&mp)).expect("manifest");
    assert_eq!(
        transfer::manifest(&copy(&t.b.data_root, &id)).expect("standby manifest"),
        on_a,
        "the final ship at Unmount"
    );
    let v = record(&t, "rep");
    assert_eq!(
        (
            standby(&v, "node-b")["epoch"].as_u64(),
            standby(&v, "node-b")["lag_ms"].as_u64()
        ),
        (Some(1), Some(0)),
        "idle and shipped: nothing to lose: {v}"
    );
    // An interval pass that read the record before the final ship may still be shipping
    // (its marker is withdrawn while it runs).
    wait_until("B's standby marker", Duration::from_secs(10), || {
        marker(&t.b.data_root, &id, "standby") == Some(1)
    });
    assert_eq!(
        marker(&t.b.data_root, &id, "epoch"),
        None,
        "a standby copy is never whole"
    );

    // While mounted, the interval ships new writes; the lag stays bounded.
    ok(&mount(&t.a, "rep", "c2"));
    std::fs::write(format!("{mp}/late"), b"shipped while mounted").expect("write");
    wait_until("the interval ship", Duration::from_secs(20), || {
        copy(&t.b.data_root, &id).join("late").exists()
    });
    wait_until("a small lag", Duration::from_secs(20), || {
        standby(&record(&t, "rep"), "node-b")["lag_ms"]
            .as_u64()
            .is_some_and(|l| l < 5_000)
    });

    // A dies. What its container wrote after the last ship is on its disk only.
    t.a.kill();
    std::fs::write(format!("{mp}/divergent"), b"written past the last ship").expect("write");
    // A's lease outlives it by up to --lease: the fence waits for it, as the executor does.
    let ((st, _, v), _) = api_after_lease(
        &t.control,
        "POST",
        "/v1/berth/volumes/rep/fence",
        &[],
        r#"{"node":"node-a","expect_epoch":1}"#,
    );
    assert_eq!(st, 200, "{v}");
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/rep/assign",
        &[],
        r#"{"primary":"node-b","epoch":2,"mode":"promote"}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["lag_ms"].is_u64() && v["lag_bytes"].is_u64(),
        "a promotion says how far behind it was: {v}"
    );
    assert_eq!(standby(&v, "node-a")["epoch"], Value::Null, "{v}");
    let mb = mount(&t.b, "rep", "c3");
    ok(&mb);
    let mpb = mb["Mountpoint"].as_str().expect("mp").to_string();
    assert_eq!(
        std::fs::read(format!("{mpb}/late")).expect("promoted data"),
        b"shipped while mounted"
    );
    assert!(!Path::new(&mpb).join("divergent").exists());
    std::fs::write(format!("{mpb}/after"), b"the new primary's write").expect("write");

    // A comes back: fenced, and a standby whose divergent write is discarded, never merged.
    t.a.restart();
    let e = mount(&t.a, "rep", "c4")["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(e.contains("current primary is node-b at epoch 2"), "{e}");
    wait_until("A to rejoin as a standby", Duration::from_secs(30), || {
        marker(&t.a.data_root, &id, "standby") == Some(2)
    });
    assert!(!copy(&t.a.data_root, &id).join("divergent").exists());
    assert_eq!(marker(&t.a.data_root, &id, "epoch"), None);
    unmount(&t.b, "rep", "c3");
    assert_eq!(
        transfer::manifest(&copy(&t.a.data_root, &id)).expect("A's copy"),
        transfer::manifest(Path::new(&mpb)).expect("B's copy"),
        "the old primary now holds exactly the new primary's data"
    );
    let v = record(&t, "rep");
    assert_eq!(
        (
            standby(&v, "node-a")["epoch"].as_u64(),
            standby(&v, "node-a")["lag_ms"].as_u64()
        ),
        (Some(2), Some(0)),
        "{v}"
    );
}

#[test]
fn a_standby_refuses_a_ship_from_a_fenced_primary() {
    let t = TwoNodes::start();
    ok(&t.a.call(
        "/VolumeDriver.Create",
        r#"{"Name":"rf","Opts":{"backend":"replicated"}}"#,
    ));
    let id = record(&t, "rf")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    ok(&mount(&t.a, "rf", "c1"));
    unmount(&t.a, "rf", "c1");
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/rf/fence",
        &[],
        r#"{"node":"node-a","expect_epoch":1}"#,
    );
    assert_eq!(st, 200, "{v}");
    // Node A, not knowing it was fenced, asks B to ship its epoch-1 copy.
    let (_, _, nodes) = api(&t.control, "GET", "/v1/state/nodes", &[], "");
    let b_addr = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["uuid"] == "node-b"))
        .and_then(|n| n["transfer"].as_str())
        .expect("B's transfer address")
        .to_string();
    let (st, _, v) = crate::support::raw(
        crate::support::Conn::Tcp(&b_addr),
        "POST",
        &format!("/v1/replica/{id}/ship"),
        &[],
        r#"{"name":"rf","epoch":1}"#,
    );
    assert_eq!(st, 409, "{v}");
    assert!(v.to_string().contains("epoch 2"), "{v}");
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// A primary that hangs mid-ship (SIGSTOP: its connections stay open, nothing more comes) does
/// not hold up the promotion: the standby's ship is stopped, the Mount answers, and the
/// promoted copy shows no partial file.
#[test]
fn a_promotion_does_not_wait_for_a_ship_from_a_hung_primary() {
    let t = TwoNodes::start_with(
        &["--ship-interval", "200ms", "--transfer-rate", "1MiB"],
        false,
    );
    ok(&t.a.call(
        "/VolumeDriver.Create",
        r#"{"Name":"hung","Opts":{"backend":"replicated"}}"#,
    ));
    let id = record(&t, "hung")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mp = mount(&t.a, "hung", "c1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    std::fs::write(format!("{mp}/f00"), vec![0u8; 512 << 10]).expect("write");
    wait_until("a first complete ship", Duration::from_secs(30), || {
        standby(&record(&t, "hung"), "node-b")["epoch"] == 1
    });
    for i in 1..16 {
        std::fs::write(format!("{mp}/f{i:02}"), vec![i as u8; 512 << 10]).expect("write");
    }
    let standby_copy = copy(&t.b.data_root, &id);
    wait_until("the ship to be under way", Duration::from_secs(30), || {
        transfer::scan(&standby_copy, None).is_ok_and(|m| {
            m.files
                .iter()
                .filter(|f| !f.path.starts_with(".berth-partial"))
                .count()
                >= 3
        })
    });
    signal(t.a.pid(), "STOP");
    struct Cont(u32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let _cont = Cont(t.a.pid());
    for (path, body) in [
        (
            "/v1/berth/volumes/hung/fence",
            r#"{"node":"node-a","expect_epoch":1}"#,
        ),
        (
            "/v1/berth/volumes/hung/assign",
            r#"{"primary":"node-b","epoch":2,"mode":"promote"}"#,
        ),
    ] {
        let ((st, _, v), _) = api_after_lease(&t.control, "POST", path, &[], body);
        assert_eq!(st, 200, "{path}: {v}");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = t.b.socket.clone();
    std::thread::spawn(move || {
        let (_, _, v) = crate::support::raw(
            crate::support::Conn::Unix(&sock),
            "POST",
            "/VolumeDriver.Mount",
            &[],
            r#"{"Name":"hung","ID":"c2"}"#,
        );
        let _ = tx.send(v);
    });
    let v = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the Mount on the promoted standby is still waiting for the hung primary");
    ok(&v);
    let mpb = v["Mountpoint"].as_str().expect("mp");
    let names: Vec<String> = std::fs::read_dir(mpb)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".berth-partial")),
        "{names:?}"
    );
    for n in &names {
        let i: usize = n[1..].parse().expect("file name");
        assert_eq!(
            std::fs::read(Path::new(mpb).join(n)).expect("read"),
            vec![i as u8; 512 << 10],
            "{n} is torn"
        );
    }
}
