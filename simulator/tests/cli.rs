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

/// The partition scenario with its `[bounds]` text replaced.
fn partition_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(scenario("partition")).expect("read");
    assert!(text.contains(from), "{from}");
    let path = dir.join("partition.toml");
    std::fs::write(&path, text.replace(from, to)).expect("write");
    path
}

#[test]
fn a_lost_writes_bound_per_kind_of_data_fails_run_and_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Postgres' standby trails by 200 ms at 100 writes/s: its promotion loses up to 20 writes,
    // which "lag" allows and 0 does not.
    let tight = partition_with(
        dir.path(),
        "lost_writes.replicated = \"lag\"",
        "lost_writes.replicated = 0",
    );
    let tight = tight.to_str().expect("utf-8");
    let run = berth_sim(&["run", tight, "--policy", "berth"]);
    assert_eq!(run.status.code(), Some(2));
    let out = String::from_utf8_lossy(&run.stdout);
    let broken = out
        .lines()
        .find(|l| l.starts_with("BOUND BROKEN under berth: berth lost "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        broken.contains(" acknowledged writes of `replicated` data (postgres ")
            && broken.ends_with(") > bound lost_writes.replicated = 0"),
        "{broken}"
    );
    let shrunk = dir.path().join("shrunk.toml");
    let sweep = berth_sim(&[
        "sweep",
        tight,
        "--runs",
        "2",
        "--policy",
        "berth",
        "--shrunk",
        shrunk.to_str().expect("utf-8"),
    ]);
    assert_eq!(sweep.status.code(), Some(2));
    let out = String::from_utf8_lossy(&sweep.stdout);
    assert!(
        out.contains("FAILED partition seed 1 under berth: berth lost ")
            && out.contains("> bound lost_writes.replicated = 0"),
        "{out}"
    );
}

#[test]
fn lost_writes_bounds_are_checked_when_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = partition_with(dir.path(), "lost_writes.shared = 0", "lost_writes.nfs = 0");
    assert_usage_error(
        &["run", typo.to_str().expect("utf-8")],
        "unknown field `nfs`",
    );
    let word = partition_with(
        dir.path(),
        "lost_writes.shared = 0",
        "lost_writes.shared = \"some\"",
    );
    assert_usage_error(
        &["run", word.to_str().expect("utf-8")],
        "a number of writes, or \"lag\"",
    );
}
