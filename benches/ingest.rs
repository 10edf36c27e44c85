//! Ingest throughput: `docker node inspect` and `/tasks` JSON into the model, as `berth plan`
//! reads them (one `ArrayReader` fed 1 MiB chunks), in MB/s of input.
//!
//! The inputs are built in memory from the real objects in `examples/docker-inspect/` (a
//! worker node with its TLS certificates and 17 engine plugins; a running task), 20,000 nodes
//! (36 MB) and 100,000 tasks (74 MB), IDs and hostnames made unique.
//!
//! `cargo bench -p berth --bench ingest`; the numbers are in BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

use berth::scheduler::ingest;

fn example(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/docker-inspect")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("read example")).expect("JSON")
}

fn array(items: impl Iterator<Item = Value>) -> String {
    let parts: Vec<String> = items.map(|v| v.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn feed<T>(mut r: ingest::ArrayReader<T>, text: &str) -> Vec<T> {
    for chunk in text.as_bytes().chunks(1 << 20) {
        r.feed(chunk).expect("valid");
    }
    r.finish().expect("valid")
}

fn throughput(c: &mut Criterion) {
    let worker = example("nodes.json")
        .into_iter()
        .find(|n| n["Spec"]["Role"] == "worker")
        .expect("a worker");
    let nodes = array((0..20_000).map(|i| {
        let mut n = worker.clone();
        n["ID"] = json!(format!("node{i:021}"));
        n["Description"]["Hostname"] = json!(format!("node-{i:05}"));
        n
    }));
    let task = example("tasks.json").remove(0);
    let tasks = array((0..100_000).map(|i| {
        let mut t = task.clone();
        t["ID"] = json!(format!("task{i:021}"));
        t["Slot"] = json!(i + 1);
        t
    }));
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(nodes.len() as u64));
    g.bench_function("nodes-20k", |b| {
        b.iter(|| {
            let n = feed(ingest::node_reader("nodes.json"), black_box(&nodes));
            assert_eq!(n.len(), 20_000);
            n
        })
    });
    g.throughput(Throughput::Bytes(tasks.len() as u64));
    g.bench_function("tasks-100k", |b| {
        b.iter(|| {
            let t = feed(ingest::task_reader("tasks.json"), black_box(&tasks));
            assert_eq!(t.len(), 100_000);
            t
        })
    });
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
