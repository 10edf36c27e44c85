//! The command line's exit codes, which scripts and CI branch on: 0 fine, 1 a usage error or a
//! bad scenario, 2 a run that needs attention (tested in `it.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn berth_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-sim"))
        .args(args)
        .output()
        .expect("berth-sim runs")
}

fn assert_usage_error(args: &[&str], says: &str) {
    let out = berth_sim(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[test]
fn usage_errors_exit_1() {
    let chaos = scenario("chaos");
    let chaos = chaos.to_str().expect("utf-8");
    assert_usage_error(&[], "Usage: berth-sim");
    assert_usage_error(&["frobnicate"], "unrecognized subcommand 'frobnicate'");
    assert_usage_error(&["run"], "<SCENARIO>");
    assert_usage_error(&["run", chaos, "--bogus"], "unexpected argument '--bogus'");
    assert_usage_error(&["run", chaos, "--seed", "x"], "invalid value 'x'");
    assert_usage_error(&["run", chaos, "--policy", "k8s"], "--policy `k8s`");
    assert_usage_error(&["sweep", chaos, "--runs", "0"], "--runs 0");
    assert_usage_error(&["run", "no-such-file.toml"], "no-such-file.toml");
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let out = berth_sim(args);
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}
