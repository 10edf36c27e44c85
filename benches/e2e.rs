//! End to end, side by side: `berth plan` on `docker inspect` JSON (read, planned, printed; a
//! fresh process per run), interleaved with SwarmKit's scheduler benchmark on the same shape
//! when a test binary of it is given. Wall time and peak RSS of every run; min / median / max
//! per shape. The method and the numbers are in BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release -p berth-daemon
//! cargo bench -p berth --bench e2e                      # Berth alone, 3 rounds
//! BERTH_E2E_SWARMKIT=/path/to/sched.test BERTH_E2E_ROUNDS=5 cargo bench -p berth --bench e2e
//! BERTH_E2E_SHAPES=100k-1k,10k-100svc cargo bench -p berth --bench e2e   # a subset
//! ```
//!
//! The inputs are generated once into `$CARGO_TARGET_DIR/e2e-inputs/` (or
//! `BERTH_E2E_DIR`): nodes copy the real worker in `examples/docker-inspect/nodes.json`
//! (TLS certificates and 17 engine plugins included), 4 CPUs / 8 GiB, labels
//! `zone=a|b|c` (i % 3) and `group=g1|g2` (i % 2); services copy the real `api` service;
//! tasks copy a real task, pending (no node): the objects SwarmKit's benchmark puts in its
//! store. `berth` is `target/release/berth` unless `BERTH_BIN` says otherwise.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

struct Shape {
    name: &'static str,
    nodes: usize,
    /// (services, replicas each).
    services: (usize, u64),
    /// Constraint `node.labels.group==g1` and preference `spread=node.labels.zone`.
    constrained: bool,
    /// Write the pending task objects (SwarmKit's benchmark stores them too).
    tasks: bool,
    /// SwarmKit's grouped benchmark of the same shape.
    swarmkit: Option<&'static str>,
    /// Also time the table output.
    table: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "1k-100k",
        nodes: 1_000,
        services: (1, 100_000),
        constrained: false,
        tasks: true,
        swarmkit: Some("BenchmarkGrouped1kNodes100kTasks"),
        table: false,
    },
    Shape {
        name: "10k-100k",
        nodes: 10_000,
        services: (1, 100_000),
        constrained: false,
        tasks: true,
        swarmkit: Some("BenchmarkGrouped10kNodes100kTasks"),
        table: true,
    },
    Shape {
        name: "100k-1k",
        nodes: 100_000,
        services: (1, 1_000),
        constrained: false,
        tasks: true,
        swarmkit: Some("BenchmarkGrouped100kNodes1kTasks"),
        table: false,
    },
    Shape {
        name: "10k-100svc",
        nodes: 10_000,
        services: (100, 1_000),
        constrained: true,
        tasks: false,
        swarmkit: None,
        table: true,
    },
    Shape {
        name: "10k-1svc",
        nodes: 10_000,
        services: (1, 100_000),
        constrained: true,
        tasks: false,
        swarmkit: None,
        table: true,
    },
];

/// A deterministic 25-character Swarm-like ID (lowercase letters and digits).
fn id(kind: u64, i: u64) -> String {
    let mut x = (kind << 40) ^ i ^ 0x9e37_79b9_7f4a_7c15;
    (0..25)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(z % 36) as usize] as char
        })
        .collect()
}

fn example(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/docker-inspect")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("read example");
    serde_json::from_str(&text).expect("example JSON")
}

fn write_array(path: &Path, items: impl Iterator<Item = Value>) {
    let mut out = String::from("[");
    for (i, v) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out.push(']');
    std::fs::write(path, out).expect("write input");
}

fn generate(shape: &Shape, dir: &Path) {
    if dir.join("done").exists() {
        return;
    }
    std::fs::create_dir_all(dir).expect("input dir");
    let worker = example("nodes.json")
        .into_iter()
        .find(|n| n["Spec"]["Role"] == "worker")
        .expect("a worker in the example");
    let width = shape.nodes.to_string().len();
    write_array(
        &dir.join("nodes.json"),
        (0..shape.nodes).map(|i| {
            let mut n = worker.clone();
            n["ID"] = json!(id(1, i as u64));
            let (zone, group) = (["a", "b", "c"][i % 3], ["g1", "g2"][i % 2]);
            n["Spec"]["Labels"] = json!({"zone": zone, "group": group});
            n["Description"]["Hostname"] = json!(format!("node-{i:0width$}"));
            n["Description"]["Resources"] =
                json!({"NanoCPUs": 4_000_000_000u64, "MemoryBytes": 8u64 << 30});
            n["Status"]["Addr"] = json!(format!(
                "10.{}.{}.{}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ));
            n
        }),
    );
    let api = example("services.json")
        .into_iter()
        .find(|s| s["Spec"]["Name"] == "api")
        .expect("the api service in the example");
    let (count, replicas) = shape.services;
    let services: Vec<Value> = (0..count)
        .map(|k| {
            let mut s = api.clone();
            s["ID"] = json!(id(2, k as u64));
            s["Spec"]["Name"] = json!(format!("bench-{k:03}"));
            s["Spec"]["Labels"] = json!({});
            s["Spec"]["Mode"] = json!({"Replicated": {"Replicas": replicas}});
            s["Spec"]["TaskTemplate"]["Resources"] = json!({"Limits": {}, "Reservations": {}});
            s["Spec"]["TaskTemplate"]["Placement"] = if shape.constrained {
                json!({"Constraints": ["node.labels.group==g1"],
                       "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]})
            } else {
                json!({})
            };
            s
        })
        .collect();
    write_array(&dir.join("services.json"), services.iter().cloned());
    let task = example("tasks.json").remove(0);
    let tasks: Box<dyn Iterator<Item = Value>> = if shape.tasks {
        Box::new(services.iter().enumerate().flat_map(move |(k, s)| {
            let task = task.clone();
            let sid = s["ID"].clone();
            (0..replicas).map(move |slot| {
                let mut t = task.clone();
                t["ID"] = json!(id(3, (k as u64) << 32 | slot));
                t["ServiceID"] = sid.clone();
                t["Slot"] = json!(slot + 1);
                t.as_object_mut().expect("object").remove("NodeID");
                t["Spec"]["Resources"] = json!({"Limits": {}, "Reservations": {}});
                t["Status"] = json!({"Timestamp": t["Status"]["Timestamp"], "State": "pending",
                                     "Message": "pending task scheduling"});
                t["DesiredState"] = json!("running");
                t
            })
        }))
    } else {
        Box::new(std::iter::empty())
    };
    write_array(&dir.join("tasks.json"), tasks);
    std::fs::write(dir.join("done"), "").expect("mark done");
}

/// One run of `cmd`: wall seconds and peak RSS in MiB, measured by a child of this binary
/// (`--measure`) so that the RSS is that command's alone.
fn measure(cmd: &[String]) -> (f64, f64, String) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg("--measure")
        .args(cmd)
        .stderr(Stdio::inherit())
        .output()
        .expect("run measurer");
    assert!(out.status.success(), "{cmd:?} failed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let head = lines.next().expect("a measurement line");
    let mut f = head
        .split_whitespace()
        .map(|x| x.parse::<f64>().expect("number"));
    let (wall, rss) = (f.next().expect("wall"), f.next().expect("rss"));
    (wall, rss, lines.collect::<Vec<_>>().join("\n"))
}

/// `--measure CMD…`: runs CMD with its stdout discarded (stdout is what SwarmKit reports on,
/// so that one is kept), prints "wall_s maxrss_mib", then what CMD printed if it is kept.
fn measure_child(cmd: &[String]) {
    let keep = cmd[0].ends_with(".test");
    let t = Instant::now();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(if keep { Stdio::piped() } else { Stdio::null() })
        .output()
        .expect("run the command");
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success() || out.status.code() == Some(2),
        "{cmd:?}: {}",
        out.status
    );
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("{wall} {}", usage.max_rss() as f64 / 1024.0);
    if keep {
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn fmt3(v: &[f64], unit: &str) -> String {
    let (lo, med, hi) = stats(v);
    format!("{lo:.2} / {med:.2} / {hi:.2} {unit}")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--measure") {
        measure_child(&args[2..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("e2e: pass --bench (cargo bench) to measure");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let berth = std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("release/berth"));
    assert!(
        berth.exists(),
        "{}: build it first (cargo build --release -p berth-daemon)",
        berth.display()
    );
    let dir = std::env::var_os("BERTH_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("e2e-inputs"));
    let swarmkit = std::env::var_os("BERTH_E2E_SWARMKIT").map(PathBuf::from);
    let rounds: usize = std::env::var("BERTH_E2E_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let only: Option<Vec<String>> = std::env::var("BERTH_E2E_SHAPES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let shapes: Vec<&Shape> = SHAPES
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.name)))
        .collect();

    for s in &shapes {
        let t = Instant::now();
        generate(s, &dir.join(s.name));
        eprintln!(
            "e2e: inputs for {} ready ({:.1} s)",
            s.name,
            t.elapsed().as_secs_f64()
        );
    }
    // name → (berth json, berth table, swarmkit ns/op, swarmkit process wall): wall s / rss MiB
    let mut json_w: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    let mut json_rss = json_w.clone();
    let mut table_w = json_w.clone();
    let mut sk_op = json_w.clone();
    let mut sk_rss = json_w.clone();
    for round in 0..rounds {
        for (k, s) in shapes.iter().enumerate() {
            let d = dir.join(s.name);
            let mut plan = vec![
                berth.display().to_string(),
                "plan".into(),
                "--nodes".into(),
                d.join("nodes.json").display().to_string(),
                "--services".into(),
                d.join("services.json").display().to_string(),
            ];
            if s.tasks {
                plan.push("--tasks".into());
                plan.push(d.join("tasks.json").display().to_string());
            }
            if let (Some(bin), Some(bench)) = (&swarmkit, s.swarmkit) {
                let (_, rss, out) = measure(&[
                    bin.display().to_string(),
                    "-test.run".into(),
                    "XXX".into(),
                    "-test.bench".into(),
                    format!("^{bench}$"),
                    "-test.benchtime".into(),
                    "1x".into(),
                ]);
                let ns = out
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .find(|w| w[1] == "ns/op")
                    .map(|w| w[0].parse::<f64>().expect("ns/op"))
                    .expect("SwarmKit printed ns/op");
                sk_op[k].push(ns / 1e9);
                sk_rss[k].push(rss);
                eprintln!("e2e: round {round} {} swarmkit {:.2} s", s.name, ns / 1e9);
            }
            let mut json = plan.clone();
            json.extend(["--output".into(), "json".into()]);
            let (w, rss, _) = measure(&json);
            json_w[k].push(w);
            json_rss[k].push(rss);
            eprintln!("e2e: round {round} {} berth json {w:.2} s", s.name);
            if s.table {
                let (w, _, _) = measure(&plan);
                table_w[k].push(w);
                eprintln!("e2e: round {round} {} berth table {w:.2} s", s.name);
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| shape | input MB | SwarmKit grouped, timed section (min / median / max) | SwarmKit peak RSS | `berth plan` JSON, wall | Berth peak RSS | `berth plan` table, wall |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (k, s) in shapes.iter().enumerate() {
        let d = dir.join(s.name);
        let mb: u64 = ["nodes.json", "services.json", "tasks.json"]
            .iter()
            .map(|f| std::fs::metadata(d.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum();
        let or_dash = |v: &[f64], unit: &str| {
            if v.is_empty() {
                "—".to_string()
            } else {
                fmt3(v, unit)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            s.name,
            mb as f64 / 1e6,
            or_dash(&sk_op[k], "s"),
            or_dash(&sk_rss[k], "MiB"),
            fmt3(&json_w[k], "s"),
            fmt3(&json_rss[k], "MiB"),
            or_dash(&table_w[k], "s"),
        );
    }
    print!("{out}");
}
