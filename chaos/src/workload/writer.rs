//! The writer workload: `berth-testapp writer` in the slot, appending numbered records to
//! `/data/records`, fsyncing each and only then acknowledging it to the [`Checker`] outside
//! the cluster.
//!
//! Every task is told who it is (`BERTH_TASK`, Swarm's `{{.Node.Hostname}}/{{.Task.ID}}`), so
//! each incarnation of the slot — a restart on the same node included — writes and
//! acknowledges under its own name. A record is `SEQ TASK MS ID` in the file, an
//! acknowledgement `ID SEQ TASK MS` on the wire; a write's key is `SEQ TASK`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use berth_lab::swarm::IMAGE;

use super::{Backend, Deployment, History, ReadBack, System, Workload, worker_service_create};
use crate::checker::Checker;
use crate::cluster::Cluster;
use crate::verdict::{Ack, Write};

pub struct Writer {
    checker: Checker,
}

impl Writer {
    pub fn new(checker: Checker) -> Writer {
        Writer { checker }
    }
}

/// One acknowledgement line read: `None` for another run's; an error for a line that is not
/// `ID SEQ TASK MS`.
pub fn parse_ack(line: &str, id: &str) -> Result<Option<(u64, String, u128)>, String> {
    let f: Vec<&str> = line.split(' ').collect();
    let [rid, seq, task, ms] = f[..] else {
        return Err(format!("not `ID SEQ TASK MS`: {line:?}"));
    };
    let (Ok(seq), Ok(ms)) = (seq.parse::<u64>(), ms.parse::<u128>()) else {
        return Err(format!("a sequence or time that is not a number: {line:?}"));
    };
    if rid.is_empty() || task.is_empty() {
        return Err(format!("an empty run or task: {line:?}"));
    }
    Ok((rid == id).then(|| (seq, task.to_string(), ms)))
}

/// The records of run `id` in one copy, and how many lines are not records (a line cut off
/// by a writer killed mid-append).
pub fn parse_records(text: &str, id: &str) -> (Vec<(u64, String, u128)>, usize) {
    let mut torn = 0;
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let parsed = match f[..] {
            [seq, task, ms, rid] if !task.is_empty() && !rid.is_empty() => {
                match (seq.parse::<u64>(), ms.parse::<u128>()) {
                    (Ok(s), Ok(m)) => Some((rid, s, task, m)),
                    _ => None,
                }
            }
            _ => None,
        };
        match parsed {
            Some((rid, s, task, m)) if rid == id => out.push((s, task.to_string(), m)),
            Some(_) => {}
            None => torn += 1,
        }
    }
    (out, torn)
}

fn key(seq: u64, task: &str) -> String {
    format!("{seq} {task}")
}

/// Every file named `records` under `dir` (each a copy of some slot's data); a directory
/// that cannot be listed is a problem, since a copy could hide in it.
pub fn find_copies(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Removed while we looked (a container's directory): nothing to read there.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                problems.push(format!("{}: {err}", dir.display()));
                continue;
            }
        };
        match e.file_type() {
            Ok(ft) if ft.is_dir() => find_copies(&e.path(), out, problems),
            Ok(_) if e.file_name() == "records" => out.push(e.path()),
            Ok(_) => {}
            Err(err) => problems.push(format!("{}: {err}", e.path().display())),
        }
    }
}

/// Reads every copy under `dir`: run `id`'s writes, problems (a copy that cannot be read) and
/// torn lines.
pub fn read_copies(dir: &Path, id: &str) -> (Vec<Write>, Vec<String>, usize) {
    let (mut files, mut problems) = (Vec::new(), Vec::new());
    find_copies(dir, &mut files, &mut problems);
    let (mut writes, mut torn) = (Vec::new(), 0);
    for f in files {
        match std::fs::read(&f) {
            Ok(bytes) => {
                let (recs, t) = parse_records(&String::from_utf8_lossy(&bytes), id);
                writes.extend(recs.into_iter().map(|(_, task, ms)| Write {
                    task,
                    written_ms: ms,
                }));
                torn += t;
            }
            Err(e) => problems.push(format!("copy {}: {e}", f.display())),
        }
    }
    (writes, problems, torn)
}

impl Workload for Writer {
    fn name(&self) -> &'static str {
        "writer"
    }

    fn deploy(
        &self,
        c: &Cluster,
        system: System,
        backend: Backend,
        seed: u64,
    ) -> Result<Deployment> {
        let since = std::time::Instant::now();
        let mut args = worker_service_create("1s");
        args.extend(["--env", "BERTH_TASK={{.Node.Hostname}}/{{.Task.ID}}"].map(String::from));
        let d = match system {
            System::Berth => {
                let name = format!("cb{seed}");
                args.extend(
                    [
                        "--name",
                        &name,
                        "--replicas",
                        "0",
                        "--label",
                        "berth.stateful=true",
                        "--label",
                        "berth.replicas=1",
                        "--label",
                        &format!("berth.volume={name}-{{slot}}"),
                        "--label",
                        &format!("berth.backend={backend}"),
                        "--label",
                        "berth.failover=move",
                        "--update-order",
                        "start-first",
                        "--mount",
                        &format!(
                            "type=volume,source={name}-{{{{.Task.Slot}}}},target=/data,volume-driver=berth,{}",
                            backend.volume_opts()
                        ),
                    ]
                    .map(String::from),
                );
                Deployment {
                    id: name.clone(),
                    service: format!("{name}-1"),
                    volume: Some(format!("{name}-1")),
                    remove: name,
                    storage: format!("berth {backend}"),
                    backend,
                    since,
                }
            }
            System::Swarm => {
                let name = format!("cs{seed}");
                let dir = match backend {
                    Backend::Shared => c.shared_dirs(&name, 1)?,
                    _ => String::new(),
                };
                let Some((mount, storage)) = backend.swarm_mount(&name, &dir) else {
                    anyhow::bail!("plain Swarm has no {backend} storage");
                };
                args.extend(
                    ["--name", &name, "--replicas", "1", "--mount", &mount].map(String::from),
                );
                Deployment {
                    id: name.clone(),
                    service: name.clone(),
                    volume: None,
                    remove: name,
                    storage,
                    backend,
                    since,
                }
            }
        };
        args.extend([IMAGE, "writer", "/data", &self.checker.addr, &d.id].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.manager().docker_ok(&args);
        Ok(d)
    }

    fn history(&self, d: &Deployment) -> History {
        let mut h = History {
            torn: self.checker.torn_since(d.since).len(),
            ..History::default()
        };
        for l in self.checker.lines_since(d.since) {
            match parse_ack(&l.text, &d.id) {
                Ok(Some((seq, task, ms))) => h.acks.push(Ack {
                    key: key(seq, &task),
                    task,
                    written_ms: ms,
                    at: l.at,
                }),
                Ok(None) => {}
                Err(why) => h.problems.push(format!("malformed acknowledgement: {why}")),
            }
        }
        h
    }

    fn read_back(&self, c: &Cluster, d: &Deployment) -> ReadBack {
        let surviving = read_surviving(c, d);
        let (mut writes, problems, torn) = read_copies(&c.lab.dir, &d.id);
        if let Ok(recs) = &surviving {
            writes.extend(recs.iter().map(|(_, task, ms)| Write {
                task: task.clone(),
                written_ms: *ms,
            }));
        }
        ReadBack {
            surviving: surviving.map(|recs| {
                recs.into_iter()
                    .map(|(seq, task, _)| key(seq, &task))
                    .collect::<BTreeSet<_>>()
            }),
            writes,
            problems,
            torn,
        }
    }
}

type Records = Vec<(u64, String, u128)>;

/// The copy the slot's running task sees, read from inside it (through whatever serves its
/// mount).
fn read_surviving(c: &Cluster, d: &Deployment) -> Result<Records, String> {
    let (node, container) = c
        .running_on(&d.service)
        .ok_or_else(|| format!("no task of {} is running", d.service))?;
    let out =
        c.lab
            .node(&node)
            .docker(&["exec", &container, "/berth-testapp", "cat", "/data/records"]);
    if !out.status.success() {
        return Err(format!(
            "cat /data/records in {container} on {node}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_records(&String::from_utf8_lossy(&out.stdout), &d.id).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_four_fields_with_numbers_where_numbers_go() {
        assert_eq!(
            parse_ack("cb1 12 lab1-w1/abc 1700000000000", "cb1"),
            Ok(Some((12, "lab1-w1/abc".into(), 1_700_000_000_000)))
        );
        assert_eq!(parse_ack("cb2 12 t 5", "cb1"), Ok(None));
        for bad in [
            "",
            "cb1 12 t",
            "cb1 12 t 5 extra",
            "cb1 x t 5",
            "cb1 12 t five",
            "cb1 -1 t 5",
            "cb1  t 5",
            "cb1 12  5",
            " 12 t 5",
            "cb1 12 t 5 ",
        ] {
            assert!(parse_ack(bad, "cb1").is_err(), "{bad:?} was accepted");
        }
        // A malformed line fails whatever run it names: it cannot be trusted to name one.
        assert!(parse_ack("cb2 x t 5", "cb1").is_err());
    }

    #[test]
    fn records_of_other_runs_are_skipped_and_cut_off_lines_counted() {
        let text = "1 t1 100 cb1\n2 t1 120 cb1\n3 t1 1\n9 t9 5 cb7\n3 t2 140 cb1\n4 t2 16";
        let (recs, torn) = parse_records(text, "cb1");
        assert_eq!(
            recs,
            vec![
                (1, "t1".into(), 100),
                (2, "t1".into(), 120),
                (3, "t2".into(), 140)
            ]
        );
        assert_eq!(torn, 2);
    }

    #[test]
    fn history_fails_on_a_malformed_acknowledgement_and_ignores_torn_ends() {
        use std::io::Write as _;
        let checker = Checker::start("127.0.0.1").unwrap();
        let w = Writer::new(checker.clone());
        let d = Deployment {
            id: "cb1".into(),
            service: "cb1-1".into(),
            remove: "cb1".into(),
            volume: None,
            storage: "test".into(),
            backend: Backend::Shared,
            since: std::time::Instant::now(),
        };
        let mut s = std::net::TcpStream::connect(&checker.addr).unwrap();
        s.write_all(b"cb1 1 t 10\ncb2 1 u 10\ncb1 2 t\ncb1 3 t 3")
            .unwrap();
        drop(s);
        assert!(berth_lab::wait_for(
            std::time::Duration::from_secs(5),
            || { w.history(&d).torn == 1 }
        ));
        let h = w.history(&d);
        assert_eq!(h.acks.len(), 1);
        assert_eq!(h.acks[0].key, "1 t");
        assert_eq!(h.problems.len(), 1, "{:?}", h.problems);
        assert!(h.problems[0].contains("cb1 2 t"), "{:?}", h.problems);
    }

    #[test]
    fn every_copy_in_the_tree_is_read_and_an_unreadable_one_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("w1/berth-data/cb1-1");
        let b = dir.path().join("shared/cb1-1");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("records"), "1 t1 100 cb1\n2 t1 120 cb1\n").unwrap();
        std::fs::write(b.join("records"), "1 t2 130 cb1\n1 x 1 cb9\n").unwrap();
        std::fs::write(b.join("other"), "1 t3 130 cb1\n").unwrap();
        let (writes, problems, torn) = read_copies(dir.path(), "cb1");
        let mut tasks: Vec<&str> = writes.iter().map(|w| w.task.as_str()).collect();
        tasks.sort();
        assert_eq!(tasks, ["t1", "t1", "t2"]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(torn, 0);
        // A `records` that cannot be read (here a link to nowhere; on a node, an I/O error)
        // may hold the second writer's records: the run fails rather than skip it.
        let c = dir.path().join("w2/berth-data/cb1-1");
        std::fs::create_dir_all(&c).unwrap();
        std::os::unix::fs::symlink("/nonexistent/berth/records", c.join("records")).unwrap();
        let (writes, problems, _) = read_copies(dir.path(), "cb1");
        assert_eq!(writes.len(), 3);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("w2/berth-data"), "{problems:?}");
    }
}
