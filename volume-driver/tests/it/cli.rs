//! The binary as a newcomer meets it (issue 8): `--version`, exit codes, configuration errors as
//! one line without a backtrace, `control --consul` without `--state` (and its election's bounds), and logs without colour
//! codes when stderr is not a terminal.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{BIN, free_port, wait_until};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run berth-volume");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_exit_zero() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    let v = out.trim();
    let commit = v
        .strip_prefix(concat!(
            "berth-volume ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("credential"), "{out}");
}

#[test]
fn usage_errors_exit_1() {
    for args in [
        &["agent"][..],
        &["control"],
        &["bogus"],
        &[],
        &["agent", "--data-root", "/x", "--ship-interval", "0s"],
        &["control", "--state", "/x", "--consul", "http://127.0.0.1:1"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(!err.is_empty(), "{args:?} says nothing");
    }
}

#[test]
fn configuration_errors_are_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("no-such-token");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "agent".into(),
            "--node-id".into(),
            "n".into(),
            "--data-root".into(),
            dir.path().display().to_string(),
            "--socket".into(),
            dir.path().join("s.sock").display().to_string(),
            "--token-file".into(),
            missing.display().to_string(),
        ],
        vec![
            "credential".into(),
            "--node-id".into(),
            "n".into(),
            "--token-file".into(),
            missing.display().to_string(),
        ],
        vec![
            "control".into(),
            "--listen".into(),
            "not-an-address".into(),
            "--state".into(),
            dir.path().join("st").display().to_string(),
            "--insecure".into(),
        ],
    ];
    for args in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&a);
        assert_eq!(code, Some(1), "{a:?}: {err}");
        assert!(
            !err.contains("stack backtrace") && !err.contains("Stack backtrace"),
            "{a:?}: {err}"
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("berth-volume: error: "))
            .unwrap_or_else(|| panic!("{a:?}: no error line in {err}"));
        assert!(line.len() > 20, "{line}");
    }
}

#[test]
fn control_with_consul_needs_no_state_dir() {
    // Nothing listens on that port: the store cannot load, which is a run-time error about
    // Consul, not a usage error about --state.
    let addr = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run(&[
        "control",
        "--consul",
        &addr,
        "--listen",
        "127.0.0.1:0",
        "--insecure",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("--state"), "{err}");
    assert!(err.to_lowercase().contains("consul"), "{err}");

    // An election that could let two instances serve is refused before any call.
    for (args, says) in [
        (
            vec!["--leader-lock-delay", "5s"],
            "at least the session TTL",
        ),
        (vec!["--leader-ttl", "2s"], "between 10s and 24h"),
        (
            vec!["--leader-ttl", "30s", "--leader-lock-delay", "90s"],
            "at most 60s",
        ),
    ] {
        let mut all = vec![
            "control",
            "--consul",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--insecure",
        ];
        all.extend(args.iter().copied());
        let (code, _, err) = run(&all);
        assert_eq!(code, Some(1), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?} should say {says:?}: {err}");
    }
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_a_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("control.log");
    let f = std::fs::File::create(&log).expect("log file");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "control",
            "--listen",
            &addr,
            "--state",
            &dir.path().join("st").display().to_string(),
            "--insecure",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn");
    wait_until("the listening line", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening"))
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}

/// A replicated control service's configuration errors: a peer that is not `ID=HOST:PORT`, an
/// ID not among the peers, two members (no majority survives either's loss), and a directory
/// holding a single instance's state, which a new group would leave behind.
#[test]
fn replicated_control_configuration_errors_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().display().to_string();
    for (args, says) in [
        (vec!["--raft-id", "1", "--peer", "1=nowhere"], "HOST:PORT"),
        (
            vec!["--raft-id", "1", "--peer", "x=127.0.0.1:1"],
            "not a number",
        ),
        (
            vec!["--raft-id", "4", "--peer", "1=127.0.0.1:1"],
            "not among",
        ),
        (
            vec![
                "--raft-id",
                "1",
                "--peer",
                "1=127.0.0.1:1",
                "--peer",
                "2=127.0.0.1:2",
            ],
            "two members",
        ),
    ] {
        let mut all = vec!["control", "--insecure", "--state", state.as_str()];
        all.extend(args.iter().copied());
        let (code, _, err) = run(&all);
        assert_eq!(code, Some(1), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?} should say {says:?}: {err}");
    }

    // A single instance's state in the directory: refused, and left as it was.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut single = crate::support::ControlSvc::start_on(dir.path(), None, addr.clone());
    let (code, _, _) = crate::support::api(
        &single,
        "POST",
        "/v1/state/nodes",
        &[],
        r#"{"uuid":"n1","host":"h","transfer":"h:1"}"#,
    );
    assert_eq!(code, 200);
    assert!(single.proc.stop(), "the single instance stops cleanly");
    let peer = format!("1={addr}");
    let (code, _, err) = run(&[
        "control",
        "--listen",
        &addr,
        "--state",
        &state,
        "--raft-id",
        "1",
        "--peer",
        &peer,
        "--insecure",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("single-instance control state"), "{err}");
    assert!(
        !dir.path().join("raft.redb").exists(),
        "nothing replicated was made"
    );
}

/// A flag's `BERTH_*` variable counts as the flag: `BERTH_INSECURE` conflicts with
/// `--token-file` as `--insecure` does, and `BERTH_LOG_FORMAT=json` logs JSON.
#[test]
fn flags_come_from_berth_variables_too() {
    let out = Command::new(BIN)
        .args([
            "control",
            "--listen",
            "127.0.0.1:0",
            "--state",
            "/nonexistent",
        ])
        .args(["--token-file", "/nonexistent"])
        .env("BERTH_INSECURE", "true")
        .output()
        .expect("run berth-volume");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    // The --insecure warning is logged, then the taken port fails the start: the log line is a
    // JSON object, the error one line after it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["control", "--insecure", "--listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--state")
        .arg(dir.path())
        .env("BERTH_LOG_FORMAT", "json")
        .output()
        .expect("run berth-volume");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("--insecure"))
        .unwrap_or_else(|| panic!("{err}"));
    let v: serde_json::Value =
        serde_json::from_str(warning).unwrap_or_else(|e| panic!("{e}: {warning}"));
    assert_eq!(v["level"], "WARN", "{v}");
    let line = err.lines().last().unwrap_or_default();
    assert!(line.starts_with("berth-volume: error: binding"), "{err}");
}

/// The subcommands `--help` lists, read from its `Commands:` section.
fn subcommands() -> Vec<String> {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    let names: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 5, "{out}");
    names
}

#[test]
fn completions_and_man_pages_name_every_subcommand() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, Some(0), "{err}");
        for n in &names {
            assert!(out.contains(n.as_str()), "{shell}: no {n}");
        }
    }
    let (code, top, err) = run(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(top.contains(".TH berth-volume 1"), "{top}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    for n in &names {
        assert!(
            top.contains(&format!("berth\\-volume\\-{n}")),
            "berth-volume(1) names no {n}"
        );
        let page = std::fs::read_to_string(dir.path().join(format!("berth-volume-{n}.1")))
            .unwrap_or_else(|e| panic!("berth-volume-{n}.1: {e}"));
        assert!(page.contains(&format!(".TH berth-volume-{n} 1")), "{page}");
    }
}
