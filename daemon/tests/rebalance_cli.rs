//! Golden tests of `berth rebalance` on the shipped example: the dry-run plan as a table and
//! as JSON, and the refusal to carry moves out. Regenerate the snapshots with
//! `UPDATE_EXPECT=1 cargo test -p berth-daemon --test rebalance_cli`.

use std::process::Command;

use expect_test::{ExpectFile, expect_file};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn berth(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("berth runs");
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    }
}

fn golden(args: &[&str], code: i32, expect: ExpectFile) {
    let r = berth(args);
    assert_eq!(
        r.code, code,
        "berth {args:?}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    expect.assert_eq(&r.stdout);
}

const NODE_BACK: [&str; 2] = ["--cluster", "examples/rebalance-node-back/cluster.toml"];

#[test]
fn dry_run_after_a_node_returns() {
    golden(
        &[&["rebalance", "--dry-run"][..], &NODE_BACK].concat(),
        0,
        expect_file!["golden/rebalance-node-back.txt"],
    );
    golden(
        &[
            &["rebalance", "--dry-run", "--output", "json"][..],
            &NODE_BACK,
        ]
        .concat(),
        0,
        expect_file!["golden/rebalance-node-back.json"],
    );
}

#[test]
fn the_json_plan_moves_pg_back_to_the_returned_zone() {
    let r = berth(
        &[
            &["rebalance", "--dry-run", "--output", "json"][..],
            &NODE_BACK,
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let moves = v["moves"].as_array().expect("moves");
    assert_eq!(moves.len(), 1, "{v:#}");
    assert_eq!(moves[0]["service"], "pg");
    assert_eq!(moves[0]["to"], "w-c1");
    assert_eq!(moves[0]["mode"], "pre-copy");
    assert_eq!(moves[0]["bytes"], 40u64 << 30);
}

#[test]
fn without_dry_run_it_refuses_and_says_why() {
    let r = berth(&[&["rebalance"][..], &NODE_BACK].concat());
    assert_eq!(r.code, 1, "stdout:\n{}", r.stdout);
    assert!(r.stdout.is_empty(), "nothing planned or done: {}", r.stdout);
    assert!(
        r.stderr.contains("moves nothing yet") && r.stderr.contains("--dry-run"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_bad_rate_is_a_usage_error() {
    let r = berth(
        &[
            &["rebalance", "--dry-run", "--rate", "fast"][..],
            &NODE_BACK,
        ]
        .concat(),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("fast"), "{}", r.stderr);
}
