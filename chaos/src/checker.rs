//! The client outside the cluster that the writer acknowledges to: a TCP listener on the lab
//! bridge that keeps every line it receives with the instant it arrived. It does not read the
//! lines — the workload does ([`crate::workload::writer`]), and a line it cannot read fails the
//! run rather than being dropped.
//!
//! Only whole lines count: bytes after the last newline of a connection that ended (a writer
//! killed or cut off mid-line) were never a complete acknowledgement; they are counted as torn.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One line received, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub at: Instant,
}

#[derive(Default)]
struct Received {
    lines: Vec<Line>,
    torn: Vec<Line>,
}

#[derive(Clone)]
pub struct Checker {
    pub addr: String,
    received: Arc<Mutex<Received>>,
}

impl Checker {
    /// Listens on `ip` (the lab bridge's address, which every node reaches).
    pub fn start(ip: &str) -> std::io::Result<Checker> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?.to_string();
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || read_lines(BufReader::new(conn), &sink));
            }
        });
        Ok(Checker { addr, received })
    }

    /// Every whole line received at or after `since`, in arrival order.
    pub fn lines_since(&self, since: Instant) -> Vec<Line> {
        let r = self.received.lock().expect("checker");
        r.lines.iter().filter(|l| l.at >= since).cloned().collect()
    }

    /// Unterminated line ends received at or after `since`.
    pub fn torn_since(&self, since: Instant) -> Vec<Line> {
        let r = self.received.lock().expect("checker");
        r.torn.iter().filter(|l| l.at >= since).cloned().collect()
    }
}

fn read_lines(mut conn: impl BufRead, sink: &Mutex<Received>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A connection that fails mid-read ends like one that closed: what came is kept.
        let n = conn.read_until(b'\n', &mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        let at = Instant::now();
        let whole = buf.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(&buf))
            .trim_end_matches('\r')
            .to_string();
        let mut r = sink.lock().expect("checker");
        if whole {
            r.lines.push(Line { text, at });
        } else {
            r.torn.push(Line { text, at });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_kept_verbatim_and_an_unterminated_end_is_torn() {
        let sink = Mutex::new(Received::default());
        let before = Instant::now();
        read_lines(&b"w 1 t 5\n\ngarbage \xff here\nw 2 t"[..], &sink);
        let r = sink.lock().unwrap();
        let text: Vec<&str> = r.lines.iter().map(|l| l.text.as_str()).collect();
        // An empty line and an unreadable one are kept, for the workload to refuse.
        assert_eq!(text, ["w 1 t 5", "", "garbage \u{fffd} here"]);
        assert!(r.lines.iter().all(|l| l.at >= before));
        assert_eq!(r.torn.len(), 1);
        assert_eq!(r.torn[0].text, "w 2 t");
    }

    #[test]
    fn lines_arrive_over_tcp_with_their_arrival_instants() {
        use std::io::Write;
        let c = Checker::start("127.0.0.1").unwrap();
        let since = Instant::now();
        let mut s = std::net::TcpStream::connect(&c.addr).unwrap();
        s.write_all(b"a 1 t 7\na 2 t 8\nhalf").unwrap();
        drop(s);
        assert!(berth_lab::wait_for(
            std::time::Duration::from_secs(5),
            || { c.lines_since(since).len() == 2 && c.torn_since(since).len() == 1 }
        ));
        assert_eq!(c.lines_since(Instant::now()).len(), 0);
    }
}
