//! `berth-testapp`: the only program in Berth's test images, which are built `FROM scratch`
//! because no image can be pulled. One static binary, a few subcommands, each the smallest thing
//! a test needs inside a container:
//!
//! ```text
//! berth-testapp sleep SECS|infinity     idle (a service's task)
//! berth-testapp put PATH TEXT           write TEXT + newline to PATH, fsync file and directory
//! berth-testapp append PATH TEXT        append TEXT + newline to PATH, fsync
//! berth-testapp fill PATH BYTES         write BYTES deterministic bytes to PATH, fsync
//! berth-testapp cat PATH...             print files
//! berth-testapp size PATH               print a file's length in bytes
//! berth-testapp writer DIR ACK_ADDR ID  append numbered records to DIR/records, fsync each,
//!                                       then acknowledge it on a TCP line to ACK_ADDR, under
//!                                       the task's name ($BERTH_TASK, else $HOSTNAME)
//! ```
//! Commands chain with a `+` argument, run in order, stopping at the first failure (there is no
//! shell in the image): `berth-testapp append /data/log started + sleep infinity`.
//! Exit status: 0 done, 1 the operation failed, 2 a usage error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

mod writer;

fn usage() -> ExitCode {
    eprintln!(
        "usage: berth-testapp sleep SECS|infinity | put PATH TEXT | append PATH TEXT | \
         fill PATH BYTES | cat PATH... | size PATH | writer DIR ACK_ADDR ID"
    );
    ExitCode::from(2)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => File::open(p)?.sync_all(),
        _ => Ok(()),
    }
}

fn write(path: &str, bytes: &[u8], append: bool) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(Path::new(path))
}

/// Bytes that differ from offset to offset, so a copy that shifts or truncates them shows.
fn pattern(len: u64) -> impl Iterator<Item = u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
}

fn run(args: &[String]) -> Result<(), String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let io = |what: &str, e: io::Error| format!("{what}: {e}");
    match a.as_slice() {
        ["sleep", "infinity"] => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        ["sleep", secs] => {
            let s: u64 = secs.parse().map_err(|_| format!("bad seconds {secs:?}"))?;
            std::thread::sleep(Duration::from_secs(s));
            Ok(())
        }
        ["put", path, text] => {
            write(path, format!("{text}\n").as_bytes(), false).map_err(|e| io(path, e))
        }
        ["append", path, text] => {
            write(path, format!("{text}\n").as_bytes(), true).map_err(|e| io(path, e))
        }
        ["fill", path, bytes] => {
            let n: u64 = bytes
                .parse()
                .map_err(|_| format!("bad byte count {bytes:?}"))?;
            let data: Vec<u8> = pattern(n).collect();
            write(path, &data, false).map_err(|e| io(path, e))
        }
        ["cat", paths @ ..] if !paths.is_empty() => {
            let mut out = io::stdout().lock();
            for p in paths {
                let mut buf = Vec::new();
                File::open(p)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .map_err(|e| io(p, e))?;
                out.write_all(&buf).map_err(|e| io("stdout", e))?;
            }
            Ok(())
        }
        ["size", path] => {
            let len = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
            println!("{len}");
            Ok(())
        }
        ["writer", dir, ack, id] => writer::run(Path::new(dir), ack, id),
        _ => Err(String::new()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.is_empty() {
        Err(String::new())
    } else {
        args.split(|a| a == "+").try_for_each(run)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => usage(),
        Err(e) => {
            eprintln!("berth-testapp: {e}");
            ExitCode::FAILURE
        }
    }
}
