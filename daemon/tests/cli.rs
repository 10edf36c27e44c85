//! Golden tests of the `berth` binary on the shipped examples: output, exit code, and the
//! error message for bad input. Regenerate the snapshots with `UPDATE_EXPECT=1 cargo test`.

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

const SEED: [&str; 6] = [
    "--nodes",
    "examples/seed-cluster/nodes.toml",
    "--services",
    "examples/seed-cluster/services.toml",
    "--tasks",
    "examples/seed-cluster/tasks.toml",
];
const DOCKER: [&str; 6] = [
    "--nodes",
    "examples/docker-inspect/nodes.json",
    "--services",
    "examples/docker-inspect/services.json",
    "--tasks",
    "examples/docker-inspect/tasks.json",
];

#[test]
fn seed_cluster_plan() {
    golden(
        &[&["plan"][..], &SEED].concat(),
        0,
        expect_file!["golden/seed-cluster.plan.txt"],
    );
    golden(
        &[&["plan", "--output", "json"][..], &SEED].concat(),
        0,
        expect_file!["golden/seed-cluster.plan.json"],
    );
}

#[test]
fn mongo_replica_set_over_two_zones() {
    let args = [
        "plan",
        "--cluster",
        "examples/mongo-two-zones/cluster.toml",
        "--output",
        "json",
    ];
    golden(&args, 0, expect_file!["golden/mongo-two-zones.plan.json"]);
    golden(
        &["plan", "--cluster", "examples/mongo-two-zones/cluster.toml"],
        0,
        expect_file!["golden/mongo-two-zones.plan.txt"],
    );
    // Why slot 2 goes to zone b: the topology spread's counts per zone, in its own terms.
    golden(
        &[
            "explain",
            "--service",
            "mongo",
            "--cluster",
            "examples/mongo-two-zones/cluster.toml",
        ],
        0,
        expect_file!["golden/mongo-two-zones.explain.txt"],
    );
}

#[test]
fn pending_reasons_and_explain() {
    let args = [
        "plan",
        "--cluster",
        "examples/pending/cluster.toml",
        "--output",
        "json",
    ];
    golden(&args, 2, expect_file!["golden/pending.plan.json"]);
    let args = [
        "explain",
        "--service",
        "db",
        "--cluster",
        "examples/pending/cluster.toml",
    ];
    golden(&args, 2, expect_file!["golden/pending.explain.txt"]);
}

#[test]
fn real_docker_inspect_json() {
    golden(
        &[&["plan", "--output", "json"][..], &DOCKER].concat(),
        0,
        expect_file!["golden/docker-inspect.plan.json"],
    );
    let args = [
        &["failover", "--event", "node-down=9h00jkmxj32p1ad2gzldp3fl4"][..],
        &DOCKER,
    ]
    .concat();
    golden(&args, 2, expect_file!["golden/docker-inspect.failover.txt"]);
    let args = [
        &["explain", "--service", "api", "--output", "json"][..],
        &DOCKER,
    ]
    .concat();
    golden(
        &args,
        0,
        expect_file!["golden/docker-inspect.explain-api.json"],
    );
}

#[test]
fn failover_plans_on_the_seed_cluster() {
    golden(
        &[&["failover", "--event", "node-down=worker1"][..], &SEED].concat(),
        0,
        expect_file!["golden/seed-cluster.worker1-down.txt"],
    );
    golden(
        &[
            &[
                "failover",
                "--event",
                "node-drained=worker2",
                "--output",
                "json",
            ][..],
            &SEED,
        ]
        .concat(),
        0,
        expect_file!["golden/seed-cluster.worker2-drained.json"],
    );
}

#[test]
fn bad_input_exits_1_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let nodes = write("nodes.toml", "[[nodes]]\nid = \"a\"\nmemroy = \"1GiB\"\n");
    let services = write(
        "services.toml",
        "[[services]]\nname = \"x\"\nconstraints = [\"node.labels.zone=a\"]\n",
    );
    let good_nodes = write("good-nodes.toml", "[[nodes]]\nid = \"a\"\n");
    let ok_services = write("ok.toml", "[[services]]\nname = \"x\"\n");
    let bad_label = write(
        "label.toml",
        "[[services]]\nname = \"x\"\nreplicas = 1\nlabels = { \"berth.statful\" = \"true\" }\n",
    );
    let bad_json = write(
        "nodes.json",
        "[{\"ID\": \"n1\", \"Spec\": {\"Availability\": \"sleepy\"}}]",
    );
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["plan", "--nodes", &nodes, "--services", &services],
            format!("{nodes}: TOML parse error at line 3"),
        ),
        (
            vec!["plan", "--nodes", &good_nodes, "--services", &services],
            format!(
                "{services}:3:17: service `x`: constraint `node.labels.zone=a`: expected one operator from ==, !="
            ),
        ),
        (
            vec!["plan", "--nodes", &bad_json, "--services", &services],
            format!("{bad_json}:1:"),
        ),
        (
            vec!["plan", "--nodes", &good_nodes, "--services", &bad_label],
            format!("{bad_label}:4:13: service `x`: unknown label `berth.statful`"),
        ),
        // A usage error is bad input too (clap's own code would be 2, which means "pending").
        (
            vec!["plan", "--nodes", &good_nodes],
            "--services <SERVICES>".into(),
        ),
        (
            vec![
                "failover",
                "--event",
                "node-down=nope",
                "--nodes",
                &good_nodes,
                "--services",
                &ok_services,
            ],
            "event names unknown node `nope`: give a node ID or hostname, one of: a (a)".into(),
        ),
        (
            vec![
                "plan",
                "--nodes",
                "/nonexistent/nodes.json",
                "--services",
                &services,
            ],
            "/nonexistent/nodes.json: cannot read".into(),
        ),
        (
            vec![
                "explain",
                "--service",
                "nope",
                "--nodes",
                &good_nodes,
                "--services",
                &ok_services,
            ],
            "unknown service `nope`".into(),
        ),
        (
            vec![
                "failover",
                "--event",
                "node-gone=a",
                "--nodes",
                &good_nodes,
                "--services",
                &services,
            ],
            "bad event `node-gone=a`".into(),
        ),
    ];
    for (args, want) in cases {
        let r = berth(&args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&want),
            "{args:?}: stderr {:?} lacks {want:?}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: nothing on stdout on error");
    }
    let r = berth(&["plan", "--nodes", &bad_json, "--services", &services]);
    assert!(r.stderr.contains("[0].Spec.Availability"), "{}", r.stderr);
}

#[test]
fn failover_event_by_hostname_is_the_same_plan_as_by_id() {
    let by_id = berth(
        &[
            &["failover", "--event", "node-down=9h00jkmxj32p1ad2gzldp3fl4"][..],
            &DOCKER,
        ]
        .concat(),
    );
    let by_host = berth(&[&["failover", "--event", "node-down=worker1"][..], &DOCKER].concat());
    assert_eq!(by_host.code, by_id.code, "{}", by_host.stderr);
    assert_eq!(by_host.stdout, by_id.stdout);
}

#[test]
fn a_constraint_key_swarm_does_not_know_is_warned_about_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("services.toml");
    std::fs::write(
        &services,
        "[[services]]\nname = \"x\"\nreplicas = 1\nconstraints = [\"node.lables.zone==a\"]\n",
    )
    .expect("write");
    let services = services.to_string_lossy();
    let r = berth(&[
        "plan",
        "--nodes",
        "examples/seed-cluster/nodes.toml",
        "--services",
        &services,
    ]);
    assert_eq!(r.code, 2, "the task stays pending: {}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "berth: warning: {services}:4:17: service `x`: constraint `node.lables.zone==a`: \
             Swarm knows no key `node.lables.zone`, so no node matches it; did you mean \
             `node.labels.zone`?"
        )),
        "{}",
        r.stderr
    );
}

/// Secure by default: `berth run` will not serve its API without the cluster token unless told
/// `--insecure`, and says how to fix it before touching Docker or the state directory.
#[test]
fn run_refuses_to_start_without_a_token_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let r = berth(&[
        "run",
        "--docker",
        "unix:///nonexistent.sock",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--token-file") && r.stderr.contains("--insecure"),
        "{}",
        r.stderr
    );
    assert!(!state.exists(), "nothing was made before the refusal");
    // Both at once is a usage error.
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    let r = berth(&["run", "--insecure", "--token-file", token.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

/// Every flag also from its `BERTH_*` variable: the same plan as with the flags, and the
/// command line wins over a variable.
#[test]
fn flags_come_from_berth_variables_too_and_the_command_line_wins() {
    let by_flags = berth(&[&["plan"][..], &SEED].concat());
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("plan")
        .env("BERTH_NODES", SEED[1])
        .env("BERTH_SERVICES", SEED[3])
        .env("BERTH_TASKS", SEED[5])
        .env("BERTH_OUTPUT", "json")
        .args(["--output", "table"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("berth runs");
    assert_eq!(out.status.code(), Some(by_flags.code));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), by_flags.stdout);
}

#[test]
fn version_names_the_commit() {
    let r = berth(&["--version"]);
    assert_eq!(r.code, 0);
    let v = r.stdout.trim();
    assert!(v.starts_with("berth 0."), "{v}");
    let commit = v
        .split("(commit ")
        .nth(1)
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
}

/// Without tasks the plan creates every service's tasks, running ones included: said on
/// stderr, and not when the tasks are given.
#[test]
fn plan_without_tasks_warns_that_it_plans_creates() {
    let r = berth(&["plan", SEED[0], SEED[1], SEED[2], SEED[3]]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("berth: warning: no tasks given") && r.stderr.contains("--live"),
        "{}",
        r.stderr
    );
    let r = berth(&[&["plan"][..], &SEED].concat());
    assert!(!r.stderr.contains("no tasks given"), "{}", r.stderr);
}

#[test]
fn live_reads_conflict_with_files_and_are_read_only_views() {
    let r = berth(&[&["plan", "--live"][..], &SEED].concat());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    // Nothing listens there: a clear error naming the service, exit 1.
    let r = berth(&["volumes", "--control", "http://127.0.0.1:1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("berth: error: the volume control service at http://127.0.0.1:1"),
        "{}",
        r.stderr
    );
}

/// `--config FILE`: its keys are flags, below the command line and the environment.
#[test]
fn a_config_file_gives_flags_below_the_environment_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "nodes = {:?}\nservices = {:?}\ntasks = {:?}\noutput = \"json\"\n",
            SEED[1], SEED[3], SEED[5]
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let table = berth(&[&["plan"][..], &SEED].concat());
    let json = berth(&[&["plan", "--output", "json"][..], &SEED].concat());
    assert_ne!(table.stdout, json.stdout);
    // The file over the default (table).
    let r = berth(&["plan", "--config", c]);
    assert_eq!(
        (r.code, &r.stdout),
        (json.code, &json.stdout),
        "{}",
        r.stderr
    );
    // The command line over the file.
    let r = berth(&["--config", c, "plan", "--output", "table"]);
    assert_eq!(
        (r.code, &r.stdout),
        (table.code, &table.stdout),
        "{}",
        r.stderr
    );
    // The environment over the file, and BERTH_CONFIG names it.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("plan")
        .env("BERTH_CONFIG", c)
        .env("BERTH_OUTPUT", "table")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("berth runs");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), table.stdout);

    std::fs::write(&config, "nodes = \"n.toml\"\noutptu = \"json\"\n").unwrap();
    let r = berth(&["plan", "--config", c]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("config file {c}: unknown key `outptu`")),
        "{}",
        r.stderr
    );
    let missing = dir.path().join("none.toml");
    let r = berth(&["plan", "--config", missing.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot read config file"), "{}", r.stderr);
}

#[test]
fn run_refuses_a_tls_certificate_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let r = berth(&[
        "run",
        "--insecure",
        "--docker",
        "unix:///nonexistent.sock",
        "--state-dir",
        state.to_str().unwrap(),
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--tls-cert and --tls-key go together: --tls-key given without the other"),
        "{}",
        r.stderr
    );
    assert!(!state.exists(), "nothing was made before the refusal");
}

// `berth rebalance` on the shipped example: the dry-run plan as a table and as JSON, and the
// refusal to carry moves out.
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
fn without_dry_run_on_a_file_it_refuses_and_says_why() {
    let r = berth(&[&["rebalance"][..], &NODE_BACK].concat());
    assert_eq!(r.code, 1, "stdout:\n{}", r.stdout);
    assert!(r.stdout.is_empty(), "nothing planned or done: {}", r.stdout);
    assert!(
        r.stderr.contains("--live") && r.stderr.contains("--dry-run"),
        "{}",
        r.stderr
    );
}

#[test]
fn without_dry_run_it_asks_berth_run_and_says_when_it_does_not_answer() {
    let r = berth(&["rebalance", "--live", "--api", "http://127.0.0.1:1"]);
    assert_eq!(r.code, 1, "stdout:\n{}", r.stdout);
    assert!(
        r.stderr.contains("asking berth run to rebalance") && r.stderr.contains("127.0.0.1:1"),
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
