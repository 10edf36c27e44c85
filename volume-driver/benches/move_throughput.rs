//! Move throughput of a `local` dataset: the real transfer endpoint and puller over loopback HTTP
//! against a raw `cp -a` of the same files on the same disk, then an incremental move after ~1 %
//! of the bytes changed. A bench binary, not criterion: one full move of 1 GiB takes seconds, so
//! a few timed repetitions say more than criterion's statistics would. cp and the move alternate
//! and the headline is the median of their per-pair ratios, because a shared disk's speed swings
//! by 2x within a minute and best-of-N of each side would pair a fast spell with a slow one.
//! Both ends of the move share this machine's cores here; on two nodes each has its own.
//!
//! `cargo bench -p berth-volume --bench move_throughput` (env `BERTH_BENCH_MIB`, default 1024,
//! scales the data; `BERTH_BENCH_DIR` picks the disk, default the system temp dir's;
//! `BERTH_BENCH_REPS`, default 5, the pairs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_volume::backend::layout::Layout;
use berth_volume::transfer;

const ID: &str = "5e1f0c2a-9b7d-4c3e-8a6f-0d1e2f3a4b5c";
const MIB: usize = 1 << 20;

/// Deterministic incompressible bytes, so neither side can win on zero pages or sparse files.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// The mix: half the bytes in 128 MiB files, a quarter in 2 MiB files, a quarter in 64 KiB files
/// spread over 64 directories. Returns the small and medium files (the ones later changed).
fn generate(root: &Path, total_mib: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let big_n = (total_mib / 2 / 128).max(1);
    let mid_n = total_mib / 4 / 2;
    let small_n = total_mib / 4 * 16;
    let mut buf = vec![0u8; 128 * MIB];
    let mut seed = 1;
    let mut write = |p: PathBuf, len: usize| {
        seed += 1;
        fill(&mut buf[..len], seed);
        std::fs::create_dir_all(p.parent().expect("file has a parent")).expect("mkdir");
        std::fs::write(&p, &buf[..len]).expect("write bench file");
        p
    };
    for i in 0..big_n {
        write(root.join(format!("big/{i}.bin")), 128 * MIB);
    }
    let mids: Vec<_> = (0..mid_n)
        .map(|i| write(root.join(format!("mid/{}/{i}.bin", i % 8)), 2 * MIB))
        .collect();
    let smalls: Vec<_> = (0..small_n)
        .map(|i| write(root.join(format!("small/{}/{i}.dat", i % 64)), 64 * 1024))
        .collect();
    (mids, smalls)
}

fn du_bytes(root: &Path) -> u64 {
    transfer::manifest(root)
        .expect("manifest")
        .files
        .iter()
        .map(|f| f.size)
        .sum()
}

fn sync() {
    let ok = Command::new("sync").status().expect("run sync").success();
    assert!(ok, "sync failed");
}

/// A timed copy: the whole of it, and the part spent in the closing `sync`.
#[derive(Clone, Copy)]
struct Timed {
    total: Duration,
    sync: Duration,
}

fn timed(copy: impl FnOnce()) -> Timed {
    sync();
    let t = Instant::now();
    copy();
    let s = Instant::now();
    sync();
    Timed {
        total: t.elapsed(),
        sync: s.elapsed(),
    }
}

fn time_cp(src: &Path, dst: &Path) -> Timed {
    let _ = std::fs::remove_dir_all(dst);
    timed(|| {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(src)
            .arg(dst)
            .status()
            .expect("run cp")
            .success();
        assert!(ok, "cp -a failed");
    })
}

fn time_pull(rt: &tokio::runtime::Runtime, addr: &str, dst: &Layout) -> (Timed, u64) {
    let mut copied = 0;
    let t = timed(|| {
        let s = rt
            .block_on(transfer::pull(
                addr,
                ID,
                None,
                dst,
                &transfer::TransferOptions::default(),
            ))
            .expect("pull");
        copied = s.copied;
    });
    (t, copied)
}

fn best(ts: &[Timed]) -> Timed {
    *ts.iter().min_by_key(|t| t.total).expect("reps > 0")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("move_throughput: bench");
        return;
    }
    let total_mib: usize = std::env::var("BERTH_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let reps: usize = std::env::var("BERTH_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5);
    let base = std::env::var_os("BERTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&base).expect("bench temp dir");
    let src = Layout::new(tmp.path().join("a"));
    let dst = Layout::new(tmp.path().join("b"));
    let sd = src.data_dir(ID);
    let (mids, smalls) = generate(&sd, total_mib);
    let bytes = du_bytes(&sd);
    println!(
        "data: {} files, {:.1} MiB in {}",
        transfer::manifest(&sd).expect("manifest").files.len(),
        bytes as f64 / MIB as f64,
        base.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let router = transfer::router(
        Arc::new(Layout::new(tmp.path().join("a"))),
        &transfer::TransferOptions::default(),
    );
    rt.spawn(async move { axum::serve(listener, router).await });

    // cp and the move alternate, so a slow spell of a shared disk hits both alike.
    let cp_dst = tmp.path().join("cp");
    let (mut cps, mut fulls) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        cps.push(time_cp(&sd, &cp_dst));
        dst.remove(ID).expect("clear destination");
        // A cold move: the source has hashed nothing yet either.
        let _ = std::fs::remove_file(src.hash_cache(ID));
        let (t, copied) = time_pull(&rt, &addr, &dst);
        assert!(copied > 0);
        fulls.push(t);
    }
    let (cp, full) = (best(&cps), best(&fulls));
    let mut ratios: Vec<f64> = cps
        .iter()
        .zip(&fulls)
        .map(|(c, f)| f.total.as_secs_f64() / c.total.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    assert_eq!(
        transfer::manifest(&dst.data_dir(ID)).expect("m"),
        transfer::manifest(&sd).expect("m"),
        "the move must reproduce the source exactly"
    );

    // Change ~1 % of the bytes: rewrite every 32nd medium file and every 96th small file.
    let mut changed = 0u64;
    let mut incs = Vec::new();
    let mut inc_copied = 0;
    for rep in 0..reps {
        let mut seed = 1_000_000 + rep as u64 * 10_000;
        for p in mids.iter().step_by(32).chain(smalls.iter().step_by(96)) {
            let mut b = std::fs::read(p).expect("read");
            seed += 1;
            fill(&mut b, seed);
            std::fs::write(p, &b).expect("rewrite");
            if rep == 0 {
                changed += b.len() as u64;
            }
        }
        let (t, copied) = time_pull(&rt, &addr, &dst);
        incs.push(t);
        inc_copied = copied;
    }
    assert_eq!(
        transfer::manifest(&dst.data_dir(ID)).expect("m"),
        transfer::manifest(&sd).expect("m"),
        "the incremental move must reproduce the source exactly"
    );

    let inc = best(&incs);
    let mibs = |d: Duration| bytes as f64 / MIB as f64 / d.as_secs_f64();
    println!("best of {reps}, each including a final `sync` (its share in brackets):");
    println!(
        "cp -a            {:>8.3} s [{:.3} s]  {:>7.1} MiB/s",
        cp.total.as_secs_f64(),
        cp.sync.as_secs_f64(),
        mibs(cp.total)
    );
    println!(
        "full move        {:>8.3} s [{:.3} s]  {:>7.1} MiB/s",
        full.total.as_secs_f64(),
        full.sync.as_secs_f64(),
        mibs(full.total),
    );
    println!(
        "full move / cp -a: median of pairs {:.2}x (pairs {}), best vs best {:.2}x (target <= 1.5x)",
        ratios[ratios.len() / 2],
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        full.total.as_secs_f64() / cp.total.as_secs_f64()
    );
    println!(
        "incremental move {:>8.3} s [{:.3} s]  ({} files, {:.1} MiB = {:.2} % changed)  {:.1} % of full move (target <= 5 %)",
        inc.total.as_secs_f64(),
        inc.sync.as_secs_f64(),
        inc_copied,
        changed as f64 / MIB as f64,
        100.0 * changed as f64 / bytes as f64,
        100.0 * inc.total.as_secs_f64() / full.total.as_secs_f64()
    );
}
