//! What one control write costs as the cluster grows: dataset creates through the HTTP API of
//! the embedded service (redb) and of a three-member replicated one (Raft, in-process members
//! on loopback), one at a time (`sequential`) and 64 at once (`concurrent`), on a state that
//! already holds 100, 1,000, 10,000 and 100,000 datasets.
//!
//! `BERTH_CONTROL_BENCH_SIZES=1000,10000` measures only those sizes, and
//! `BERTH_CONTROL_BENCH_MODES=embedded` (or `replicated`, `store`) only those services. The state
//! is seeded by store writes (the embedded store's whole document, the replicated group's
//! entries of 500 datasets each), not N API calls, so the large sizes set up in seconds.
//!
//! `store` is the floor under `embedded/sequential`: one durable redb commit of one created
//! dataset's records (`RedbStore::save_change`), no HTTP and no writer thread, on a store
//! seeded with N datasets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_control_model::liveness::Timing;
use berth_control_model::model::{Change, NewDataset, State};
use berth_volume_client::ControlClient;
use berth_volume_control::api::{self, Control};
use berth_volume_control::raft::{Replica, Settings};
use berth_volume_control::replicated;
use berth_volume_control::store::{RedbStore, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CONCURRENT: usize = 64;
/// Datasets per Raft entry while seeding a replicated service.
const SEED_CHUNK: usize = 500;

fn sizes() -> Vec<usize> {
    match std::env::var("BERTH_CONTROL_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("BERTH_CONTROL_BENCH_SIZES: numbers")
            })
            .collect(),
        Err(_) => vec![100, 1_000, 10_000, 100_000],
    }
}

fn modes() -> Vec<String> {
    match std::env::var("BERTH_CONTROL_BENCH_MODES") {
        Ok(s) => s.split(',').map(|m| m.trim().to_string()).collect(),
        Err(_) => vec!["store".into(), "embedded".into(), "replicated".into()],
    }
}

/// A state holding `n` datasets; its document is what a store's seed saves.
fn seeded_state(n: usize) -> State {
    let mut s = State::default();
    for i in 0..n {
        let mut metadata = BTreeMap::new();
        metadata.insert("name".to_string(), format!("seed-{i}"));
        s.create(
            NewDataset {
                primary: format!("node-{}", i % 100),
                metadata,
                ..NewDataset::default()
            },
            None,
        )
        .expect("seed");
    }
    s
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// A running service (embedded, or every member of a replicated one) and a client of it.
struct Service {
    client: ControlClient,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    replicas: Vec<Replica>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Service {
    async fn embedded(doc: &[u8]) -> Service {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path()).expect("store");
        store.save(doc).await.expect("seed");
        let c = Arc::new(Control::open(Box::new(store), None).await.expect("control"));
        let addr = free_addr();
        let l = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        let serve = tokio::spawn(async move {
            let _ = api::serve(l, c, std::future::pending()).await;
        });
        Service {
            client: ControlClient::new(&format!("http://{addr}"), None).expect("client"),
            tasks: vec![serve],
            replicas: Vec::new(),
            _dirs: vec![dir],
        }
    }

    async fn replicated(seed: &State, want: usize) -> Service {
        let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let peers: BTreeMap<u64, String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect();
        let mut s = Service {
            client: ControlClient::new(
                &addrs
                    .iter()
                    .map(|a| format!("http://{a}"))
                    .collect::<Vec<_>>()
                    .join(","),
                None,
            )
            .expect("client"),
            tasks: Vec::new(),
            replicas: Vec::new(),
            _dirs: Vec::new(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tmp");
            let replica =
                Replica::start(dir.path(), Settings::new(i as u64 + 1, peers.clone()), None)
                    .await
                    .expect("member");
            let c = Arc::new(
                Control::open_replicated(replica.clone(), None, Timing::default())
                    .await
                    .expect("control"),
            );
            let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
            s.tasks.push(tokio::spawn(replicated::lead(c.clone())));
            s.tasks.push(tokio::spawn(async move {
                let _ = api::serve(l, c, std::future::pending()).await;
            }));
            s.replicas.push(replica);
            s._dirs.push(dir);
        }
        // Seeded through the leader's store as entries of changes, `SEED_CHUNK` datasets each
        // (one whole-document entry of 100,000 datasets outlasts the time openraft gives an
        // append), which the leader then takes up as a new leader would. A write of the
        // service's own (its clock) in between changes no dataset.
        let start = Instant::now();
        let leader = loop {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "no leader writing format 2"
            );
            match s
                .replicas
                .iter()
                .find(|r| r.status().serving && r.writes_changes())
            {
                Some(r) => break r.clone(),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let before: State = leader
            .doc()
            .map(|d| serde_json::from_str(&d).expect("document"))
            .unwrap_or_default();
        let rows: Vec<_> = seed.datasets.iter().collect();
        for (i, chunk) in rows.chunks(SEED_CHUNK).enumerate() {
            let c = Change {
                generation: before.generation + i as u64 + 1,
                clock_ms: before.clock_ms,
                datasets: chunk
                    .iter()
                    .map(|(k, v)| ((*k).clone(), Some((*v).clone())))
                    .collect(),
                ..Change::default()
            };
            leader
                .store()
                .save_change(seed, &c)
                .await
                .expect("seed entry");
        }
        leader.gate.lost();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "seed not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok((d, _)) = s.client.datasets().await
                && d.len() >= want
            {
                break;
            }
        }
        s
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for r in &self.replicas {
            let _ = r.raft.shutdown().await;
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn create(client: &ControlClient) {
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "name".to_string(),
        format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    );
    match client.create("node-1", None, &metadata, None).await {
        Ok(_) => {}
        // The client retried a create whose first attempt had committed (it follows the
        // leader and retries for up to 5 s): the write happened.
        Err(e) if e.status() == Some(409) => {}
        Err(e) => panic!("create: {e:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("control_writes");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in sizes() {
        let seed = seeded_state(n);
        let doc = serde_json::to_vec(&seed).expect("document");
        for mode in modes() {
            if mode == "store" {
                let dir = tempfile::tempdir().expect("tmp");
                let store = RedbStore::open(dir.path()).expect("store");
                rt.block_on(store.save(&doc)).expect("seed");
                let mut state = seed.clone();
                state.reindex();
                state.settle();
                g.throughput(Throughput::Elements(1));
                g.bench_with_input(BenchmarkId::new("store/commit", n), &n, |b, _| {
                    b.iter(|| {
                        let mut metadata = BTreeMap::new();
                        let i = NEXT.fetch_add(1, Ordering::Relaxed);
                        metadata.insert("name".to_string(), format!("bench-{i}"));
                        state
                            .create(
                                NewDataset {
                                    primary: "node-1".into(),
                                    metadata,
                                    ..NewDataset::default()
                                },
                                None,
                            )
                            .expect("create");
                        let (c, _) = state.take_change();
                        rt.block_on(store.save_change(&state, &c)).expect("commit");
                    });
                });
                continue;
            }
            let svc = rt.block_on(async {
                match mode.as_str() {
                    "embedded" => Service::embedded(&doc).await,
                    _ => Service::replicated(&seed, n).await,
                }
            });
            let client = svc.client.clone();
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(
                BenchmarkId::new(format!("{mode}/sequential"), n),
                &n,
                |b, _| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let t = Instant::now();
                            for _ in 0..iters {
                                create(&client).await;
                            }
                            t.elapsed()
                        })
                    });
                },
            );
            g.throughput(Throughput::Elements(CONCURRENT as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{mode}/concurrent"), n),
                &n,
                |b, _| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let t = Instant::now();
                            for _ in 0..iters {
                                let all: Vec<_> = (0..CONCURRENT)
                                    .map(|_| {
                                        let c = client.clone();
                                        tokio::spawn(async move { create(&c).await })
                                    })
                                    .collect();
                                for t in all {
                                    t.await.expect("task");
                                }
                            }
                            t.elapsed()
                        })
                    });
                },
            );
            rt.block_on(svc.stop());
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
