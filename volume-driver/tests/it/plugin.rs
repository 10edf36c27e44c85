//! The plugin protocol end to end through the real binary: JSON shapes, refcounts, bad input,
//! fencing across two agents, the local data move, and the shared backend.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::support::{TwoNodes, api};

fn ok(v: &Value) {
    assert_eq!(v["Err"], "", "expected success, got {v}");
}

fn err_of(v: &Value) -> String {
    let e = v["Err"].as_str().unwrap_or_default().to_string();
    assert!(!e.is_empty(), "expected an Err, got {v}");
    e
}

#[test]
fn endpoints_shapes_and_refcounts() {
    let t = TwoNodes::start();
    let a = &t.a;
    let mode = std::fs::metadata(&a.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o007,
        0,
        "socket mode {mode:o} must be 0660 or stricter"
    );
    assert_eq!(
        a.call("/Plugin.Activate", ""),
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        a.call("/VolumeDriver.Capabilities", "{}"),
        json!({"Capabilities": {"Scope": "global"}})
    );
    let create = r#"{"Name":"v1","Opts":{"size":"1GiB","profile":"gold"}}"#;
    ok(&a.call("/VolumeDriver.Create", create));
    ok(&a.call("/VolumeDriver.Create", create));
    ok(&t.b.call("/VolumeDriver.Create", create));
    let list = a.call("/VolumeDriver.List", "{}");
    assert_eq!(
        list,
        json!({"Volumes": [{"Name": "v1", "Mountpoint": ""}], "Err": ""})
    );
    let get = a.call("/VolumeDriver.Get", r#"{"Name":"v1"}"#);
    ok(&get);
    assert_eq!(get["Volume"]["Name"], "v1");
    assert_eq!(get["Volume"]["Status"]["maximum_size"], "1073741824");
    assert_eq!(get["Volume"]["Status"]["profile"], "gold");
    assert_eq!(get["Volume"]["Status"]["primary"], "node-a");
    assert_eq!(get["Volume"]["Status"]["epoch"], "1");
    let m1 = a.call("/VolumeDriver.Mount", r#"{"Name":"v1","ID":"c1"}"#);
    ok(&m1);
    let mp = m1["Mountpoint"].as_str().expect("mountpoint").to_string();
    assert!(std::path::Path::new(&mp).is_dir(), "{mp}");
    let m2 = a.call("/VolumeDriver.Mount", r#"{"Name":"v1","ID":"c2"}"#);
    assert_eq!(m2["Mountpoint"], mp.as_str());
    assert_eq!(
        a.call("/VolumeDriver.Path", r#"{"Name":"v1"}"#),
        json!({"Mountpoint": mp, "Err": ""})
    );
    ok(&a.call("/VolumeDriver.Unmount", r#"{"Name":"v1","ID":"c1"}"#));
    assert_eq!(
        a.call("/VolumeDriver.Path", r#"{"Name":"v1"}"#)["Mountpoint"],
        mp.as_str(),
        "c2 still holds it"
    );
    assert_eq!(t.dataset("v1")["mounted_on"], "node-a");
    let e = err_of(&a.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#));
    assert!(e.contains("mounted"), "{e}");
    ok(&a.call("/VolumeDriver.Unmount", r#"{"Name":"v1","ID":"c2"}"#));
    assert_eq!(
        a.call("/VolumeDriver.Path", r#"{"Name":"v1"}"#)["Mountpoint"],
        ""
    );
    assert_eq!(t.dataset("v1")["mounted_on"], Value::Null);
    ok(&a.call("/VolumeDriver.Remove", r#"{"Name":"v1"}"#));
    let e = err_of(&a.call("/VolumeDriver.Get", r#"{"Name":"v1"}"#));
    assert!(e.contains("not found"), "{e}");
    assert_eq!(
        a.call("/VolumeDriver.List", "{}"),
        json!({"Volumes": [], "Err": ""})
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let t = TwoNodes::start();
    let a = &t.a;
    let long = "x".repeat(256);
    for (name, want) in [
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a\u{0}b", "control"),
        ("a\nb", "control"),
        ("", "empty"),
        (long.as_str(), "255"),
    ] {
        let body = json!({"Name": name, "Opts": {}}).to_string();
        let e = err_of(&a.call("/VolumeDriver.Create", &body));
        assert!(e.contains(want), "{name:?}: {e}");
        let body = json!({"Name": name, "ID": "c"}).to_string();
        err_of(&a.call("/VolumeDriver.Mount", &body));
    }
    for (opts, want) in [
        (json!({"colour": "red"}), "unknown option"),
        (json!({"size": "lots"}), "expected a size"),
        (json!({"size": "1MiB"}), "64 MiB"),
        (json!({"backend": "nfs"}), "local, shared"),
        (json!({"profile": "a b"}), "profile"),
    ] {
        let e = err_of(&a.call(
            "/VolumeDriver.Create",
            &json!({"Name": "v", "Opts": opts}).to_string(),
        ));
        assert!(e.contains(want), "{opts}: {e}");
    }
    for ep in ["Create", "Mount", "Remove", "Get", "Path", "Unmount"] {
        let e = err_of(&a.call(&format!("/VolumeDriver.{ep}"), "{not json"));
        assert!(e.contains("malformed"), "{ep}: {e}");
    }
    let e = err_of(&a.call("/VolumeDriver.Mount", r#"{"Name":"ghost","ID":"c"}"#));
    assert!(e.contains("not found"), "{e}");
    let e = err_of(&a.call("/VolumeDriver.Remove", r#"{"Name":"ghost"}"#));
    assert!(e.contains("not found"), "{e}");
    assert_eq!(
        t.dataset("v"),
        Value::Null,
        "no dataset from refused creates"
    );
}

#[test]
fn concurrent_creates_make_exactly_one_dataset() {
    let t = TwoNodes::start();
    std::thread::scope(|s| {
        for i in 0..8 {
            let agent = if i % 2 == 0 { &t.a } else { &t.b };
            s.spawn(
                move || ok(&agent.call("/VolumeDriver.Create", r#"{"Name":"race","Opts":{}}"#)),
            );
        }
    });
    let (_, _, all) = api(&t.control, "GET", "/v1/configuration/datasets", &[], "");
    let n = all
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["metadata"]["name"] == "race")
        .count();
    assert_eq!(n, 1, "{all}");
}

fn move_to(t: &TwoNodes, id: &str, node: &str, force: bool) -> (u16, Value) {
    let body = json!({"primary": node, "force": force}).to_string();
    let (st, _, v) = api(
        &t.control,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &[],
        &body,
    );
    (st, v)
}

#[test]
fn move_copies_data_and_fences_the_old_primary() {
    let t = TwoNodes::start();
    ok(&t.a.call(
        "/VolumeDriver.Create",
        r#"{"Name":"db","Opts":{"size":"1GiB"}}"#,
    ));
    let mp =
        t.a.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c1"}"#)["Mountpoint"]
            .as_str()
            .expect("mp")
            .to_string();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::create_dir_all(format!("{mp}/sub")).expect("mkdir");
    std::fs::write(format!("{mp}/sub/x"), &payload).expect("write");
    let id = t.dataset("db")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, v) = move_to(&t, &id, "node-b", false);
    assert_eq!(st, 409, "a mounted dataset does not move: {v}");
    assert!(
        v["description"]
            .as_str()
            .unwrap_or_default()
            .contains("mounted on node-a"),
        "{v}"
    );
    let e = err_of(&t.b.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c2"}"#));
    assert!(e.contains("current primary is node-a at epoch 1"), "{e}");
    ok(&t
        .a
        .call("/VolumeDriver.Unmount", r#"{"Name":"db","ID":"c1"}"#));
    let (st, v) = move_to(&t, &id, "node-b", false);
    assert_eq!((st, v["epoch"].as_u64()), (200, Some(2)), "{v}");
    let e = err_of(&t.a.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c3"}"#));
    assert!(
        e.contains("fenced") && e.contains("current primary is node-b at epoch 2"),
        "{e}"
    );
    let mb =
        t.b.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c4"}"#);
    ok(&mb);
    let mpb = mb["Mountpoint"].as_str().expect("mp");
    assert_ne!(mpb, mp);
    assert_eq!(
        std::fs::read(format!("{mpb}/sub/x")).expect("read on B"),
        payload
    );
    assert_eq!(
        std::fs::read(format!("{mp}/sub/x")).expect("source intact"),
        payload
    );
    // Failover: B holds the mount; only a forced move from a node declared dead takes it.
    let (st, _) = move_to(&t, &id, "node-a", true);
    assert_eq!(st, 409, "force alone does not steal a live node's mount");
    let (st, _, _) = api(&t.control, "POST", "/v1/berth/nodes/node-b/dead", &[], "");
    assert_eq!(st, 200);
    let (st, v) = move_to(&t, &id, "node-a", true);
    assert_eq!((st, v["epoch"].as_u64()), (200, Some(3)), "{v}");
    let ma =
        t.a.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c5"}"#);
    ok(&ma);
    assert_eq!(
        std::fs::read(format!("{mp}/sub/x")).expect("read on A"),
        payload
    );
    // B's Unmount after being fenced does not release A's claim.
    ok(&t
        .b
        .call("/VolumeDriver.Unmount", r#"{"Name":"db","ID":"c4"}"#));
    assert_eq!(t.dataset("db")["mounted_on"], "node-a");
    let e = err_of(&t.b.call("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c6"}"#));
    assert!(e.contains("current primary is node-a at epoch 3"), "{e}");
}

#[test]
fn shared_backend_moves_without_copying() {
    let t = TwoNodes::start();
    ok(&t.a.call(
        "/VolumeDriver.Create",
        r#"{"Name":"s1","Opts":{"backend":"shared"}}"#,
    ));
    let mp =
        t.a.call("/VolumeDriver.Mount", r#"{"Name":"s1","ID":"c1"}"#)["Mountpoint"]
            .as_str()
            .expect("mp")
            .to_string();
    std::fs::write(format!("{mp}/f"), b"shared").expect("write");
    ok(&t
        .a
        .call("/VolumeDriver.Unmount", r#"{"Name":"s1","ID":"c1"}"#));
    let id = t.dataset("s1")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(move_to(&t, &id, "node-b", false).0, 200);
    let mb =
        t.b.call("/VolumeDriver.Mount", r#"{"Name":"s1","ID":"c2"}"#);
    assert_eq!(mb["Mountpoint"], mp.as_str(), "same directory, no copy");
    assert!(
        !t.b.data_root.join("datasets").join(&id).exists(),
        "nothing copied to B's data root"
    );
    let e = err_of(&t.a.call("/VolumeDriver.Mount", r#"{"Name":"s1","ID":"c3"}"#));
    assert!(e.contains("epoch 2"), "{e}");
}
