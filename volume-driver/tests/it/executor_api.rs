//! The executor contract's control side through the real binary: `ControlClient`'s fence,
//! assign and reads against the running service (so the shared `wire` types are exercised on
//! both ends), raw HTTP for the status codes and the 409 body, and the agents honouring it.

use berth_control_model::wire::AssignMode;
use berth_volume_client::ControlClient;
use serde_json::{Value, json};

use crate::support::{AgentSvc, Conn, TwoNodes, api, raw};

fn ok(v: &Value) {
    assert_eq!(v["Err"], "", "expected success, got {v}");
}

fn mount(a: &AgentSvc, name: &str, caller: &str) -> Value {
    a.call(
        "/VolumeDriver.Mount",
        &json!({"Name": name, "ID": caller}).to_string(),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn fence_then_move_through_the_client_with_replays_and_refusals() {
    let t = TwoNodes::start_with(&[], true);
    ok(&t
        .a
        .call("/VolumeDriver.Create", r#"{"Name":"db","Opts":{}}"#));
    let mp = mount(&t.a, "db", "c1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    std::fs::write(format!("{mp}/row"), b"acknowledged").expect("write");
    let c = ControlClient::new(&t.control.url(), Some("cluster-s3cret".into())).expect("client");
    rt().block_on(async {
        let v = c.volume("db").await.expect("read").expect("exists");
        assert_eq!(
            (v.epoch, v.primary.as_deref(), v.mounted_on.as_deref()),
            (1, Some("node-a"), Some("node-a"))
        );
        assert_eq!(
            (v.backend.as_str(), v.whole_copy_on.clone()),
            ("local", vec!["node-a".to_string()])
        );
        assert_eq!(c.volume("ghost").await.expect("read"), None);

        // node-a is alive and holds the mount: its writer may be running, so the fence waits
        // for its lease, which a live agent keeps renewing, or for an operator's word.
        let e = c
            .fence("db", "node-a", 1)
            .await
            .expect_err("node-a's lease runs");
        assert_eq!((e.status(), e.current_epoch()), (Some(423), Some(1)), "{e}");
        assert!(
            e.retry_after().is_some_and(|d| !d.is_zero()),
            "a 423 says when to retry: {e}"
        );
        assert!(e.to_string().contains("lease"), "{e}");
        c.declare_dead("node-a").await.expect("declare dead");
        let f = c.fence("db", "node-a", 1).await.expect("fence");
        assert_eq!(
            (
                f.epoch,
                f.primary.clone(),
                f.fenced_from.as_deref(),
                f.mounted_on.clone()
            ),
            (2, None, Some("node-a"), None)
        );
        assert_eq!(c.fence("db", "node-a", 1).await.expect("replay"), f);
        let e = c.fence("db", "node-b", 1).await.expect_err("stale");
        assert_eq!((e.status(), e.current_epoch()), (Some(409), Some(2)), "{e}");

        // Fenced: nobody mounts, not the old primary with a new caller, not the next one.
        for (agent, caller) in [(&t.a, "c2"), (&t.b, "c3")] {
            let e = mount(agent, "db", caller)["Err"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(e.contains("fenced"), "{e}");
        }

        let m = c
            .assign("db", "node-b", 2, AssignMode::Move)
            .await
            .expect("assign");
        assert_eq!(
            (m.primary.as_deref(), m.assigned),
            (Some("node-b"), Some(AssignMode::Move))
        );
        assert_eq!(
            m.source.as_ref().map(|s| (s.node.as_str(), s.epoch)),
            Some(("node-a", Some(1))),
            "the newest whole copy is on node-a"
        );
        let again = c
            .assign("db", "node-b", 2, AssignMode::Move)
            .await
            .expect("replay");
        assert_eq!(again.primary, m.primary);
        let e = c
            .assign("db", "node-a", 2, AssignMode::Move)
            .await
            .expect_err("another assignment at that epoch");
        assert_eq!((e.status(), e.current_epoch()), (Some(409), Some(2)), "{e}");
        let e = c
            .assign("db", "node-b", 3, AssignMode::Move)
            .await
            .expect_err("wrong epoch");
        assert_eq!(e.current_epoch(), Some(2));
        assert!(
            c.volumes()
                .await
                .expect("list")
                .iter()
                .any(|v| v.name == "db")
        );
    });
    let mb = mount(&t.b, "db", "c4");
    ok(&mb);
    let mpb = mb["Mountpoint"].as_str().expect("mp");
    assert_eq!(
        std::fs::read(format!("{mpb}/row")).expect("moved"),
        b"acknowledged"
    );
    let e = mount(&t.a, "db", "c1")["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(e.contains("current primary is node-b at epoch 2"), "{e}");
}

#[test]
fn recreate_gives_an_empty_copy_and_the_http_surface_is_as_documented() {
    let t = TwoNodes::start_with(&[], true);
    let admin = [("authorization", "Bearer cluster-s3cret")];
    ok(&t
        .a
        .call("/VolumeDriver.Create", r#"{"Name":"member","Opts":{}}"#));
    let mp = mount(&t.a, "member", "c1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    std::fs::write(format!("{mp}/old"), b"x").expect("write");
    let (st, _, v) = api(&t.control, "GET", "/v1/berth/volumes/member", &admin, "");
    assert_eq!(st, 200, "{v}");
    for key in [
        "name",
        "dataset_id",
        "epoch",
        "primary",
        "fenced_from",
        "backend",
        "mounted_on",
        "standbys",
        "whole_copy_on",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/member/fence",
        &admin,
        r#"{"node":"node-a","expect_epoch":4}"#,
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["epoch"], 1, "the refusal carries the current epoch: {v}");
    assert!(v["description"].is_string());
    let (st, h, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/member/fence",
        &admin,
        r#"{"node":"node-a","expect_epoch":1}"#,
    );
    assert_eq!(st, 423, "node-a's lease runs: {v}");
    assert!(v["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{v}");
    assert!(h.contains("retry-after:"), "{h}");
    let (st, _, _) = api(
        &t.control,
        "POST",
        "/v1/berth/nodes/node-a/dead",
        &admin,
        "",
    );
    assert_eq!(st, 200);
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/member/fence",
        &admin,
        r#"{"node":"node-a","expect_epoch":1}"#,
    );
    assert_eq!(
        (st, v["epoch"].as_u64(), &v["primary"]),
        (200, Some(2), &Value::Null),
        "{v}"
    );
    for bad in [
        r#"{"primary":"node-b","epoch":2,"mode":"teleport"}"#,
        r#"{"primary":"node-b","epoch":2}"#,
        "{nope",
    ] {
        let (st, _, v) = api(
            &t.control,
            "POST",
            "/v1/berth/volumes/member/assign",
            &admin,
            bad,
        );
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/member/assign",
        &admin,
        r#"{"primary":"node-b","epoch":2,"mode":"promote"}"#,
    );
    assert_eq!(st, 400, "promote needs replicated: {v}");
    let (st, _, v) = api(
        &t.control,
        "POST",
        "/v1/berth/volumes/member/assign",
        &admin,
        r#"{"primary":"node-b","epoch":2,"mode":"recreate"}"#,
    );
    assert_eq!((st, v["primary"].as_str()), (200, Some("node-b")), "{v}");
    let mb = mount(&t.b, "member", "c2");
    ok(&mb);
    let dir = mb["Mountpoint"].as_str().expect("mp");
    assert_eq!(
        std::fs::read_dir(dir).expect("dir").count(),
        0,
        "a recreated member starts empty"
    );
    let (st, _, _) = api(&t.control, "GET", "/v1/berth/volumes/ghost", &admin, "");
    assert_eq!(st, 404);
    // Both services' /metrics take the cluster token (what Prometheus presents), nothing less.
    let (st, _, _) = api(&t.control, "GET", "/metrics", &[], "");
    assert_eq!(st, 401);
    let (st, _, m) = api(&t.control, "GET", "/metrics", &admin, "");
    assert_eq!(st, 200);
    assert!(
        m.as_str()
            .is_some_and(|m| m.contains("berth_fence_epoch{volume=\"member\"} 2")),
        "{m}"
    );
    let (_, _, nodes) = api(&t.control, "GET", "/v1/state/nodes", &admin, "");
    let agent = nodes[0]["transfer"].as_str().expect("transfer address");
    let get = |h: &[(&str, &str)]| raw(Conn::Tcp(agent), "GET", "/metrics", h, "");
    assert_eq!(get(&[]).0, 401);
    assert_eq!(get(&[("authorization", "Bearer wrong")]).0, 401);
    let (st, _, m) = get(&admin);
    assert_eq!(st, 200);
    assert!(
        m.as_str()
            .is_some_and(|m| m.contains("berth_self_fence_total")),
        "{m}"
    );
    let (st, _, v) = api(&t.control, "GET", "/v1/berth/volumes", &admin, "");
    assert_eq!((st, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
}
