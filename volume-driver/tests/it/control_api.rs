//! The Flocker dataset API v1 surface of the control service: codes, bodies, the configuration
//! tag, leases, the bearer token, and a restart that loses nothing.

use serde_json::{Value, json};

use crate::support::{ControlSvc, api};

const ID: &str = "5f0c9e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6";

fn tag_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-configuration-tag: "))
        .expect("X-Configuration-Tag header")
        .trim()
        .to_string()
}

#[test]
fn flocker_codes_tags_leases_and_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let mut c = ControlSvc::start(&state, None);
    let (st, head, v) = api(&c, "GET", "/v1/configuration/datasets", &[], "");
    assert_eq!((st, v), (200, json!([])));
    let tag0 = tag_of(&head);
    let body = json!({"primary": "n1", "dataset_id": ID, "maximum_size": 1073741824u64, "metadata": {"name": "v1"}}).to_string();
    let (st, _, v) = api(
        &c,
        "POST",
        "/v1/configuration/datasets",
        &[("X-If-Configuration-Matches", "stale")],
        &body,
    );
    assert_eq!(st, 412, "{v}");
    assert!(v["description"].is_string());
    let (st, head, v) = api(
        &c,
        "POST",
        "/v1/configuration/datasets",
        &[("X-If-Configuration-Matches", &tag0)],
        &body,
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (
            v["dataset_id"].as_str(),
            v["primary"].as_str(),
            v["epoch"].as_u64()
        ),
        (Some(ID), Some("n1"), Some(1))
    );
    assert_ne!(tag_of(&head), tag0);
    let (st, _, v) = api(&c, "POST", "/v1/configuration/datasets", &[], &body);
    assert_eq!(st, 409, "id collision: {v}");
    for bad in [
        "{nope",
        r#"{"dataset_id":"x"}"#,
        r#"{"primary":"n1","bogus":1}"#,
        r#"{"primary":"n1","maximum_size":1000}"#,
    ] {
        let (st, _, v) = api(&c, "POST", "/v1/configuration/datasets", &[], bad);
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(
            v["description"].is_string() && v["errors"].is_array(),
            "{v}"
        );
    }
    let (st, _, _) = api(
        &c,
        "POST",
        "/v1/configuration/datasets/00000000-0000-0000-0000-000000000000",
        &[],
        r#"{"primary":"n2"}"#,
    );
    assert_eq!(st, 404);
    // Leases block moves until released.
    let (st, _, v) = api(
        &c,
        "POST",
        "/v1/configuration/leases",
        &[],
        &json!({"dataset_id": ID, "node_uuid": "n1", "expires": null}).to_string(),
    );
    assert_eq!(st, 201, "{v}");
    let (_, _, v) = api(&c, "GET", "/v1/configuration/leases", &[], "");
    assert_eq!(
        v,
        json!([{"dataset_id": ID, "node_uuid": "n1", "expires": null}])
    );
    let (st, _, v) = api(
        &c,
        "POST",
        &format!("/v1/configuration/datasets/{ID}"),
        &[],
        r#"{"primary":"n2"}"#,
    );
    assert_eq!(st, 409, "leased: {v}");
    let (st, _, _) = api(
        &c,
        "DELETE",
        &format!("/v1/configuration/leases/{ID}"),
        &[],
        "",
    );
    assert_eq!(st, 200);
    let (st, _, v) = api(
        &c,
        "POST",
        &format!("/v1/configuration/datasets/{ID}"),
        &[],
        r#"{"primary":"n2"}"#,
    );
    assert_eq!(
        (st, v["epoch"].as_u64(), v["primary"].as_str()),
        (200, Some(2), Some("n2"))
    );
    let (st, _, _) = api(
        &c,
        "POST",
        "/v1/state/nodes",
        &[],
        r#"{"uuid":"n2","host":"h2","transfer":"127.0.0.1:1"}"#,
    );
    assert_eq!(st, 200);
    // Restart: everything acknowledged is still there.
    assert!(c.proc.stop(), "control exits cleanly on SIGTERM");
    let addr = c.addr.clone();
    c = ControlSvc::start_on(&state, None, addr);
    let (_, _, v) = api(&c, "GET", "/v1/configuration/datasets", &[], "");
    assert_eq!(
        (v[0]["epoch"].as_u64(), v[0]["primary"].as_str()),
        (Some(2), Some("n2")),
        "{v}"
    );
    let (_, _, v) = api(&c, "GET", "/v1/state/nodes", &[], "");
    assert_eq!(
        (v[0]["uuid"].as_str(), v[0]["host"].as_str()),
        (Some("n2"), Some("h2")),
        "{v}"
    );
    // Delete is idempotent; a deleted dataset cannot move (405).
    for _ in 0..2 {
        let (st, _, v) = api(
            &c,
            "DELETE",
            &format!("/v1/configuration/datasets/{ID}"),
            &[],
            "",
        );
        assert_eq!((st, v["deleted"].as_bool()), (200, Some(true)));
    }
    let (st, _, _) = api(
        &c,
        "POST",
        &format!("/v1/configuration/datasets/{ID}"),
        &[],
        r#"{"primary":"n1"}"#,
    );
    assert_eq!(st, 405);
    let (_, _, v) = api(&c, "GET", "/v1/state/datasets", &[], "");
    assert_eq!(v, Value::Array(vec![]));
}

#[test]
fn bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().expect("tmp");
    let tok = dir.path().join("token");
    std::fs::write(&tok, "s3cret\n").expect("token");
    let c = ControlSvc::start(&dir.path().join("state"), Some(&tok));
    let (st, head, v) = api(&c, "GET", "/v1/configuration/datasets", &[], "");
    assert_eq!(st, 401, "{v}");
    assert!(v["description"].is_string());
    assert!(
        head.contains("www-authenticate: bearer realm=\"berth\""),
        "a 401 says how to authenticate: {head}"
    );
    let (st, head, _) = api(
        &c,
        "GET",
        "/v1/configuration/datasets",
        &[("Authorization", "Bearer wrong")],
        "",
    );
    assert_eq!(st, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (st, _, _) = api(
        &c,
        "GET",
        "/v1/configuration/datasets",
        &[("Authorization", "Bearer s3cret")],
        "",
    );
    assert_eq!(st, 200);
}

/// Secure by default: no token, no service, unless the operator says `--insecure`, which is
/// then said in the log at every start and in `berth_control_insecure`.
#[test]
fn control_refuses_to_start_without_a_token_unless_insecure() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(crate::support::BIN)
        .args(["control", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("s"))
        .output()
        .expect("run control");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("--insecure"),
        "the refusal names both ways out: {err}"
    );
    assert!(
        !dir.path().join("s").exists(),
        "nothing was made before the refusal"
    );
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let log = dir.path().join("control.log");
    let child = std::process::Command::new(crate::support::BIN)
        .args(["control", "--insecure", "--listen", &addr, "--state"])
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn control");
    let _c = crate::support::Proc { child };
    crate::support::wait_until("control port", std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let conn = || crate::support::Conn::Tcp(&addr);
    let (st, _, _) = crate::support::raw(conn(), "GET", "/v1/configuration/datasets", &[], "");
    assert_eq!(st, 200, "an insecure service answers anyone");
    let (_, _, metrics) = crate::support::raw(conn(), "GET", "/metrics", &[], "");
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("\nberth_control_insecure 1\n"),
        "the metric says so: {text}"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("WARN") && text.contains("--insecure: no token"),
        "the log says so: {text}"
    );
}

/// The API takes only what the plugin would: Docker volume names (no `/`, no `..`, not empty,
/// no control character, at most 255 bytes) and sizes from 64 MiB to 1 PiB.
#[test]
fn the_api_refuses_names_and_sizes_the_plugin_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = ControlSvc::start(&dir.path().join("state"), None);
    for name in ["", "a/b", "..", "../etc", "a\u{1}b"] {
        let body = json!({"primary": "n1", "metadata": {"name": name}}).to_string();
        let (st, _, v) = api(&c, "POST", "/v1/configuration/datasets", &[], &body);
        assert_eq!(st, 400, "{name:?}: {v}");
        assert!(
            v["description"].as_str().unwrap_or("").contains("name"),
            "{name:?}: {v}"
        );
    }
    let body = json!({"primary": "n1", "maximum_size": 1u64 << 60, "metadata": {"name": "huge"}})
        .to_string();
    let (st, _, v) = api(&c, "POST", "/v1/configuration/datasets", &[], &body);
    assert_eq!(st, 400, "1 EiB: {v}");
    let (_, _, v) = api(&c, "GET", "/v1/configuration/datasets", &[], "");
    assert_eq!(v, json!([]), "nothing refused was recorded");
}
