//! The checker outside the cluster: every writer acknowledges each durable record to it over
//! TCP (`ID SEQ HOST MS`), and it keeps them with the instant they arrived. A record it holds
//! was acknowledged; a system that loses it lost an acknowledged write.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Which workload (one per run).
    pub id: String,
    pub seq: u64,
    /// The writer's container (one per incarnation of the slot's task).
    pub host: String,
    /// When the checker received it.
    pub at: Instant,
}

#[derive(Clone)]
pub struct Checker {
    pub addr: String,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl Checker {
    /// Listens on `ip` (the lab bridge's address, which every node reaches).
    pub fn start(ip: &str) -> std::io::Result<Checker> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?.to_string();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let sink = acks.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        let mut f = line.split(' ');
                        let (Some(id), Some(seq), Some(host)) = (f.next(), f.next(), f.next())
                        else {
                            continue;
                        };
                        let Ok(seq) = seq.parse() else { continue };
                        sink.lock().expect("acks").push(Ack {
                            id: id.to_string(),
                            seq,
                            host: host.to_string(),
                            at: Instant::now(),
                        });
                    }
                });
            }
        });
        Ok(Checker { addr, acks })
    }

    /// Every acknowledgement of workload `id` so far.
    pub fn acks(&self, id: &str) -> Vec<Ack> {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.id == id)
            .cloned()
            .collect()
    }
}
