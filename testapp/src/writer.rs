//! The chaos harness's stateful writer: appends numbered records to `DIR/records`, makes each
//! durable (`fdatasync`), and only then acknowledges it to the checker outside the cluster, one
//! line per record over TCP: `ID SEQ`. A record the checker saw acknowledged must therefore be
//! in the file of whichever copy of the data survives; one it did not see may or may not be.
//!
//! On start it continues after the last whole record already in the file, so a restarted task
//! on a moved volume carries on the sequence, and a task started on an empty volume starts
//! again at 1 — which the checker counts as lost acknowledged records. A last line cut off by
//! a writer killed mid-append is ended first, so the next record is not glued onto it.
//!
//! Each record also names the task that wrote it (`BERTH_TASK`, which the chaos harness sets
//! to Swarm's `{{.Node.Hostname}}/{{.Task.ID}}`, else `HOSTNAME`: with host networking that is
//! the node's, the same for every task on it) and the wall-clock millisecond it was written
//! (one machine's clock in the chaos harness), so two writers appending to copies of one slot
//! at the same time — a restart on the same node included — show as overlapping intervals of
//! two tasks: `SEQ TASK MS ID` in the file, `ID SEQ TASK MS` on the acknowledgement line.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
        // Whole records only: a line cut off mid-append may still start with a number.
        .filter(|l| l.split(' ').count() == 4)
        .filter_map(|l| l.split(' ').next().and_then(|s| s.parse::<u64>().ok()))
        .last()
        .unwrap_or(0)
}

/// Whether the file's last byte is not a newline (a record cut off mid-append).
fn ends_mid_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Opens the records file for appending, with the last whole record's sequence number; a
/// last line cut off mid-append is ended first.
fn open_records(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let seq = last_seq(path);
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    if ends_mid_line(&mut file)? {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok((file, seq))
}

/// Who this writer is: its task, else its host.
fn identity() -> String {
    ["BERTH_TASK", "HOSTNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.replace(char::is_whitespace, "_"))
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
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
    let task = identity();
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let (mut file, mut seq) = open_records(&path).map_err(err)?;
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
        file.write_all(format!("{seq} {task} {ms} {id}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(err)?;
        let _ = tx.send(format!("{id} {seq} {task} {ms}\n"));
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_cut_off_mid_append_is_ended_before_the_next_and_not_counted() {
        let dir = std::env::temp_dir().join(format!("berth-testapp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records");
        std::fs::write(&path, "1 t 100 w\n2 t 120 w\n3 t 1").unwrap();
        let (mut f, seq) = open_records(&path).unwrap();
        assert_eq!(seq, 2);
        f.write_all(b"3 u 200 w\n").unwrap();
        drop(f);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "1 t 100 w\n2 t 120 w\n3 t 1\n3 u 200 w\n");
        // A whole file is left as it is; an empty or missing one starts at 0.
        let (_, seq) = open_records(&path).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let (_, seq) = open_records(&dir.join("none")).unwrap();
        assert_eq!(seq, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
