//! The chaos harness's stateful writer: appends numbered records to `DIR/records`, makes each
//! durable (`fdatasync`), and only then acknowledges it to the checker outside the cluster, one
//! line per record over TCP: `ID SEQ`. A record the checker saw acknowledged must therefore be
//! in the file of whichever copy of the data survives; one it did not see may or may not be.
//!
//! On start it continues after the last whole record already in the file, so a restarted task
//! on a moved volume carries on the sequence, and a task started on an empty volume starts
//! again at 1 — which the checker counts as lost acknowledged records.
//!
//! Each record also names the writer's host (`HOSTNAME`, the Swarm task's container) and the
//! wall-clock millisecond it was written (one machine's clock in the chaos harness), so two
//! writers appending to copies of one slot at the same time show as overlapping intervals of
//! two hosts: `SEQ HOST MS ID` in the file, `ID SEQ HOST MS` on the acknowledgement line.

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
        let conn = addr
            .parse()
            .map_err(|_| std::io::Error::other("bad address"))
            .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)));
        match conn {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Writes never wait for acknowledgements: a writer cut off from the checker keeps appending
/// to its copy, as a database keeps serving its local clients. That is the dangerous case the
/// chaos harness must see — a second writer on a copy of the slot — rather than a writer that
/// politely stops.
pub fn run(dir: &Path, ack: &str, id: &str) -> Result<(), String> {
    let path = dir.join("records");
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
    let mut seq = last_seq(&path);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let ack = ack.to_string();
    std::thread::spawn(move || {
        let mut checker = connect(&ack);
        for line in rx {
            // Acknowledge only what is durable (it was synced before it was queued); a lost
            // connection is re-dialled and the record acknowledged then, never skipped.
            while checker.write_all(line.as_bytes()).is_err() {
                checker = connect(&ack);
            }
        }
    });
    loop {
        seq += 1;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        file.write_all(format!("{seq} {host} {ms} {id}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = tx.send(format!("{id} {seq} {host} {ms}\n"));
        std::thread::sleep(INTERVAL);
    }
}
