//! What the data path costs (ARCHITECTURE "Fencing", rule 2): the same writes through a mount the
//! agent serves (FUSE passthrough with the lease gate in front of every write) and straight to
//! the directory underneath, on the same disk:
//! - `append_fdatasync_4k`: a database log's pattern — append 4 KiB, `fdatasync`, repeat; the
//!   latency per acknowledged record;
//! - `append_fdatasync_4k_dsync`: the same through a `shared` mount, whose files the agent opens
//!   `O_DSYNC` (so each write reaches the storage before it returns);
//! - `write_1m`: 1 MiB sequential writes, no sync (throughput, the page cache beneath).
//!
//! Needs root and /dev/fuse (it mounts); without them it says NOT RUN and measures nothing.
//!
//! `cargo bench -p berth-volume --bench datapath`

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use berth_control_model::gate::MountGate;
use berth_volume::datapath::Session;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn can_mount() -> bool {
    rustix::process::geteuid().is_root() && Path::new("/dev/fuse").exists()
}

fn append_sync(dir: &Path, buf: &[u8]) -> impl FnMut() {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("open");
    let buf = buf.to_vec();
    move || {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
    }
}

fn bench(c: &mut Criterion) {
    if !can_mount() {
        eprintln!(
            "NOT RUN: the data path bench mounts FUSE filesystems: it needs root and /dev/fuse"
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).expect("backing");
    let serve = |name: &str, sync: bool| {
        let d = backing.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        Session::serve(
            name,
            &d,
            &tmp.path().join("mnt").join(name),
            MountGate::new(name, None, 0),
            sync,
        )
        .expect("serve")
    };
    let fuse = serve("fuse", false);
    let dsync = serve("dsync", true);
    let direct = backing.join("direct");
    std::fs::create_dir_all(&direct).expect("dir");

    let record = vec![7u8; 4096];
    let mut g = c.benchmark_group("append_fdatasync_4k");
    g.throughput(Throughput::Bytes(record.len() as u64));
    g.measurement_time(Duration::from_secs(5));
    for (name, dir) in [
        ("direct", direct.as_path()),
        ("fuse", fuse.mountpoint()),
        ("fuse_dsync", dsync.mountpoint()),
    ] {
        let mut op = append_sync(dir, &record);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(&mut op));
    }
    g.finish();

    let block = vec![9u8; 1 << 20];
    let mut g = c.benchmark_group("write_1m");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.measurement_time(Duration::from_secs(5));
    for (name, dir) in [("direct", direct.as_path()), ("fuse", fuse.mountpoint())] {
        let path = dir.join("big");
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut f = std::fs::File::create(&path).expect("create");
            let mut written = 0u64;
            b.iter(|| {
                // Rewind every 256 MiB so the file, and the disk it fills, stays bounded.
                if written >= 256 << 20 {
                    f = std::fs::File::create(&path).expect("create");
                    written = 0;
                }
                f.write_all(&block).expect("write");
                written += block.len() as u64;
            })
        });
    }
    g.finish();
    fuse.stop();
    dsync.stop();
}

criterion_group!(benches, bench);
criterion_main!(benches);
