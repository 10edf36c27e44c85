//! The chaos harness's stateful writer: appends numbered records to `DIR/records`, makes each
//! durable (`fdatasync`), and only then acknowledges it to the checker outside the cluster, one
//! line per record over TCP: `ID SEQ`. A record the checker saw acknowledged must therefore be
//! in the file of whichever copy of the data survives; one it did not see may or may not be.
//!
//! On start it continues after the last whole record already in the file, so a restarted task
//! on a moved volume carries on the sequence, and a task started on an empty volume starts
//! again at 1 — which the checker counts as lost acknowledged records.
//!
//! Each record also names the writer's host (`HOSTNAME`, the Swarm task's container), so two
//! writers appending to copies of one slot show as two hosts in one sequence range.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Records per second; slow enough that an acknowledgement is never far behind its fsync.
const INTERVAL: Duration = Duration::from_millis(20);

fn last_seq(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        // A torn last line (crash mid-append) has no trailing newline and fails to parse.
        .filter_map(|l| l.split(' ').next().and_then(|s| s.parse::<u64>().ok()))
        .last()
        .unwrap_or(0)
}

fn connect(addr: &str) -> TcpStream {
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn run(dir: &Path, ack: &str, id: &str) -> Result<(), String> {
    let path = dir.join("records");
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
    let mut seq = last_seq(&path);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut checker = connect(ack);
    loop {
        seq += 1;
        file.write_all(format!("{seq} {host}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Acknowledge only what is durable; a lost connection is re-dialled and the record is
        // acknowledged then, never skipped.
        while checker
            .write_all(format!("{id} {seq} {host}\n").as_bytes())
            .is_err()
        {
            checker = connect(ack);
        }
        std::thread::sleep(INTERVAL);
    }
}
