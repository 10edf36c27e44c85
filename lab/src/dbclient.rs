//! Clients of the lab's databases from outside the cluster (the host, on the lab bridge),
//! each through the database's own client: the `postgres` crate (PostgreSQL's wire protocol),
//! the `redis` crate, and `etcdctl` from the etcd image. Every write is one key of a run,
//! acknowledged only once the database said it is durable (PostgreSQL: a commit with
//! `synchronous_commit=on`; Redis: a reply under `appendfsync always`; etcd: a put committed
//! by a majority), and tagged with the identity of the server that acknowledged it:
//!
//! - PostgreSQL: `ADDR/POSTMASTER-START/SYSTEM-ID` — one postmaster incarnation of one cluster;
//! - Redis: `run_id` — one process;
//! - etcd: `cluster ID` — a cluster (its members serve one history; a second cluster, e.g. a
//!   member that founded a new one, is a second writer).
//!
//! [`Load`] writes to every address at once, one thread per address, as Jepsen's clients talk
//! to every node: two servers that both acknowledge writes over the same interval are two
//! primaries. Reading back ([`DbClient::read_all`]) lists the run's keys the database holds.
//! The parsers are pure and unit-tested; a malformed answer is an error, never a guess.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dbimage::{self, Db};

/// How long a connection attempt may take: a killed node refuses at once, a cut one does not.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long one write or read may take before the client gives up on that server.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// One database server (or cluster endpoint) as its client sees it.
pub trait DbClient: Send {
    /// Writes key `seq` of the run; `Ok(identity)` once the server acknowledged it durable.
    fn write(&mut self, seq: u64) -> Result<String, String>;
    /// The run's keys the database holds now.
    fn read_all(&mut self) -> Result<BTreeSet<u64>, String>;
}

/// A client for `db` at `addr:port` writing the keys of run `run`.
pub fn client(db: Db, addr: &str, port: u16, run: &str) -> Box<dyn DbClient> {
    match db {
        Db::Postgres => Box::new(Postgres::new(addr, port, run)),
        Db::Redis => Box::new(Redis::new(addr, port, run)),
        Db::Etcd => Box::new(Etcd::new(addr, port, run)),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub struct Postgres {
    config: postgres::Config,
    run: String,
    conn: Option<(postgres::Client, String)>,
}

impl Postgres {
    pub fn new(addr: &str, port: u16, run: &str) -> Postgres {
        let mut config = postgres::Config::new();
        config
            .host(addr)
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(COMMAND_TIMEOUT)
            .keepalives_idle(Duration::from_secs(1))
            .options(&format!(
                "-c statement_timeout={}",
                COMMAND_TIMEOUT.as_millis()
            ));
        Postgres {
            config,
            run: run.to_string(),
            conn: None,
        }
    }

    fn connected(&mut self) -> Result<&mut (postgres::Client, String), String> {
        if self.conn.is_none() {
            let mut c = self
                .config
                .connect(postgres::NoTls)
                .map_err(|e| format!("connect: {e}"))?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS berth_acks \
                 (run text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (run, seq))",
            )
            .map_err(|e| format!("create table: {e}"))?;
            let row = c
                .query_one(
                    "SELECT coalesce(host(inet_server_addr()), 'local'), \
                     extract(epoch FROM pg_postmaster_start_time())::text, \
                     (SELECT system_identifier FROM pg_control_system())::text",
                    &[],
                )
                .map_err(|e| format!("identity: {e}"))?;
            let id = pg_identity(&row.get::<_, String>(0), &row.get::<_, String>(1), &{
                row.get::<_, String>(2)
            })?;
            self.conn = Some((c, id));
        }
        Ok(self.conn.as_mut().expect("connected"))
    }
}

/// A PostgreSQL server's identity from `inet_server_addr()`, the postmaster's start (epoch
/// seconds) and the cluster's system identifier.
pub fn pg_identity(addr: &str, started: &str, system_id: &str) -> Result<String, String> {
    if addr.is_empty() || started.parse::<f64>().is_err() || system_id.parse::<u64>().is_err() {
        return Err(format!(
            "not a server identity: addr {addr:?}, start {started:?}, system id {system_id:?}"
        ));
    }
    Ok(format!("{addr}/{started}/{system_id}"))
}

impl DbClient for Postgres {
    fn write(&mut self, seq: u64) -> Result<String, String> {
        let run = self.run.clone();
        let r = self.connected().and_then(|(c, id)| {
            c.execute(
                "INSERT INTO berth_acks (run, seq) VALUES ($1, $2)",
                &[&run, &(seq as i64)],
            )
            .map(|_| id.clone())
            .map_err(|e| format!("insert: {e}"))
        });
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn read_all(&mut self) -> Result<BTreeSet<u64>, String> {
        let run = self.run.clone();
        let r = self.connected().and_then(|(c, _)| {
            c.query("SELECT seq FROM berth_acks WHERE run = $1", &[&run])
                .map_err(|e| format!("select: {e}"))
        });
        match r {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    let v: i64 = r.get(0);
                    u64::try_from(v).map_err(|_| format!("a negative key {v}"))
                })
                .collect(),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

pub struct Redis {
    url: String,
    key: String,
    conn: Option<(redis::Connection, String)>,
}

impl Redis {
    pub fn new(addr: &str, port: u16, run: &str) -> Redis {
        Redis {
            url: format!("redis://{addr}:{port}/"),
            key: format!("berth:{run}"),
            conn: None,
        }
    }

    fn connected(&mut self) -> Result<&mut (redis::Connection, String), String> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
            let mut c = client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| format!("connect: {e}"))?;
            c.set_read_timeout(Some(COMMAND_TIMEOUT))
                .and_then(|_| c.set_write_timeout(Some(COMMAND_TIMEOUT)))
                .map_err(|e| e.to_string())?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query(&mut c)
                .map_err(|e| format!("INFO: {e}"))?;
            let id = redis_run_id(&info)?;
            self.conn = Some((c, id));
        }
        Ok(self.conn.as_mut().expect("connected"))
    }
}

/// The `run_id` line of `INFO server`: one Redis process.
pub fn redis_run_id(info: &str) -> Result<String, String> {
    let ids: Vec<&str> = info
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("run_id:"))
        .collect();
    match ids[..] {
        [id] if id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(id.to_string()),
        _ => Err(format!("INFO server has no single 40-hex run_id: {info:?}")),
    }
}

impl DbClient for Redis {
    fn write(&mut self, seq: u64) -> Result<String, String> {
        let key = self.key.clone();
        let r = self.connected().and_then(|(c, id)| {
            // A replica answers READONLY; under `appendfsync always` the reply follows the
            // fsync of the AOF.
            redis::cmd("SADD")
                .arg(&key)
                .arg(seq)
                .query::<i64>(c)
                .map(|_| id.clone())
                .map_err(|e| format!("SADD: {e}"))
        });
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn read_all(&mut self) -> Result<BTreeSet<u64>, String> {
        let key = self.key.clone();
        let r = self.connected().and_then(|(c, _)| {
            redis::cmd("SMEMBERS")
                .arg(&key)
                .query::<Vec<String>>(c)
                .map_err(|e| format!("SMEMBERS: {e}"))
        });
        match r {
            Ok(members) => members
                .iter()
                .map(|m| {
                    m.parse()
                        .map_err(|_| format!("a member that is no key: {m:?}"))
                })
                .collect(),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// etcd

pub struct Etcd {
    etcdctl: PathBuf,
    endpoint: String,
    prefix: String,
}

impl Etcd {
    pub fn new(addr: &str, port: u16, run: &str) -> Etcd {
        Etcd {
            etcdctl: dbimage::program(Db::Etcd, "usr/bin/etcdctl"),
            endpoint: format!("http://{addr}:{port}"),
            prefix: format!("/berth/{run}/"),
        }
    }

    fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg(format!("--dial-timeout={}ms", CONNECT_TIMEOUT.as_millis()))
            .arg(format!(
                "--command-timeout={}ms",
                COMMAND_TIMEOUT.as_millis()
            ))
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many members of the cluster have started (joined and named), as this endpoint's
    /// `etcdctl member list` says.
    pub fn started_members(&self) -> Result<usize, String> {
        Ok(etcd_started_members(&self.etcdctl(&["member", "list"])?))
    }
}

/// The started members in `etcdctl member list`'s table (`ID, STATUS, NAME, PEER ADDRS,
/// CLIENT ADDRS, IS LEARNER`): a member added but not yet started has no name; a learner does
/// not vote.
pub fn etcd_started_members(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            f.len() >= 6 && f[1] == "started" && !f[2].is_empty() && f[5].trim() == "false"
        })
        .count()
}

/// The cluster ID in the header of `etcdctl put -w json`'s answer.
pub fn etcd_cluster_id(json: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json:?}"))?;
    match v["header"]["cluster_id"].as_u64() {
        Some(id) if id != 0 => Ok(format!("{id:x}")),
        _ => Err(format!("no cluster_id in the header: {json:?}")),
    }
}

/// The keys of `etcdctl get --prefix P --keys-only` (one key a line, blank lines between),
/// each `P<seq>`.
pub fn etcd_keys(listing: &str, prefix: &str) -> Result<BTreeSet<u64>, String> {
    listing
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix(prefix)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not a key of {prefix}: {l:?}"))
        })
        .collect()
}

impl DbClient for Etcd {
    fn write(&mut self, seq: u64) -> Result<String, String> {
        let key = format!("{}{seq}", self.prefix);
        let json = self.etcdctl(&["put", &key, "1", "-w", "json"])?;
        etcd_cluster_id(&json)
    }

    fn read_all(&mut self) -> Result<BTreeSet<u64>, String> {
        // Linearizable (etcdctl's default): a member cut off from its majority refuses.
        let listing = self.etcdctl(&["get", "--prefix", &self.prefix, "--keys-only"])?;
        etcd_keys(&listing, &self.prefix)
    }
}

// ---------------------------------------------------------------------------------------------
// The load

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbAck {
    pub seq: u64,
    /// The server that acknowledged it (see the module's doc).
    pub identity: String,
    /// The address the client wrote to.
    pub target: String,
    /// When the acknowledgement arrived, Unix milliseconds (the lab's one clock).
    pub acked_ms: u128,
    pub at: Instant,
}

/// Writes to every address at once, one thread each, keys from one counter, until dropped.
pub struct Load {
    acks: Arc<Mutex<Vec<DbAck>>>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Pause between one thread's writes: ~20 writes a second per server.
const PACE: Duration = Duration::from_millis(50);

impl Load {
    pub fn start(db: Db, addrs: &[String], port: u16, run: &str) -> Load {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(1));
        let threads = addrs
            .iter()
            .map(|addr| {
                let (acks, errors, stop, seq) =
                    (acks.clone(), errors.clone(), stop.clone(), seq.clone());
                let (addr, run) = (addr.clone(), run.to_string());
                std::thread::spawn(move || {
                    let mut c = client(db, &addr, port, &run);
                    while !stop.load(Ordering::Relaxed) {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        match c.write(n) {
                            Ok(identity) => acks.lock().expect("acks").push(DbAck {
                                seq: n,
                                identity,
                                target: addr.clone(),
                                acked_ms: SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .map(|d| d.as_millis())
                                    .unwrap_or(0),
                                at: Instant::now(),
                            }),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                // A refused server is asked again soon, not in a tight loop.
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                        std::thread::sleep(PACE);
                    }
                })
            })
            .collect();
        Load {
            acks,
            errors,
            stop,
            threads,
        }
    }

    /// Every acknowledgement so far.
    pub fn acks(&self) -> Vec<DbAck> {
        self.acks.lock().expect("acks").clone()
    }

    /// Writes refused or failed so far (expected wherever no primary runs).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Stops writing; waits for every thread's write in flight to end (bounded by the
    /// timeouts).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_identity_needs_an_address_a_start_and_a_system_id() {
        assert_eq!(
            pg_identity("10.1.2.3", "1765100000.123", "7716540484665847832"),
            Ok("10.1.2.3/1765100000.123/7716540484665847832".into())
        );
        assert!(pg_identity("", "1.5", "7").is_err());
        assert!(pg_identity("a", "yesterday", "7").is_err());
        assert!(pg_identity("a", "1.5", "-7").is_err());
        assert!(pg_identity("a", "1.5", "").is_err());
    }

    #[test]
    fn a_redis_run_id_is_the_one_40_hex_line() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:54ae9bf568c671c220cf0934d2f4ae611d2e8402\r\ntcp_port:6379\r\n";
        assert_eq!(
            redis_run_id(info),
            Ok("54ae9bf568c671c220cf0934d2f4ae611d2e8402".into())
        );
        assert!(redis_run_id("# Server\r\nredis_version:7\r\n").is_err());
        assert!(redis_run_id("run_id:xyz\r\n").is_err());
        let twice = "run_id:54ae9bf568c671c220cf0934d2f4ae611d2e8402\nrun_id:54ae9bf568c671c220cf0934d2f4ae611d2e8403\n";
        assert!(redis_run_id(twice).is_err(), "two ids name no one server");
    }

    #[test]
    fn an_etcd_put_names_its_cluster_and_nothing_else_passes() {
        let put = r#"{"header":{"cluster_id":4279110587018845534,"member_id":12757388912664295058,"revision":2,"raft_term":2}}"#;
        assert_eq!(etcd_cluster_id(put), Ok("3b6274683ddf1d5e".into()));
        for bad in [
            "",
            "OK",
            r#"{"header":{}}"#,
            r#"{"header":{"cluster_id":0}}"#,
            r#"{"header":{"cluster_id":"x"}}"#,
        ] {
            assert!(etcd_cluster_id(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn only_started_named_voting_members_count() {
        let listing = "8e9e05c52164694d, started, db1-1, http://10.0.0.21:2380, http://10.0.0.21:2379, false\n\
                       91bc3c398fb3c146, unstarted, , http://10.0.0.22:2380, , false\n\
                       fd422379fda50e48, started, db1-3, http://10.0.0.23:2380, http://10.0.0.23:2379, true\n\
                       2a1b3c4d5e6f7a8b, started, db1-2, http://10.0.0.24:2380, http://10.0.0.24:2379, false\n";
        assert_eq!(etcd_started_members(listing), 2);
        assert_eq!(etcd_started_members(""), 0);
    }

    #[test]
    fn etcd_keys_are_the_runs_and_a_stranger_fails() {
        let listing = "/berth/r1/1\n\n/berth/r1/2\n\n/berth/r1/10\n";
        assert_eq!(
            etcd_keys(listing, "/berth/r1/"),
            Ok(BTreeSet::from([1, 2, 10]))
        );
        assert_eq!(etcd_keys("", "/berth/r1/"), Ok(BTreeSet::new()));
        assert!(etcd_keys("/berth/r2/1\n", "/berth/r1/").is_err());
        assert!(etcd_keys("/berth/r1/x\n", "/berth/r1/").is_err());
    }
}
