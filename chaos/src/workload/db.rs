//! What the database workloads share: a real database's image in the slot, written by the
//! database's own client from the host ([`berth_lab::dbclient::Load`]: every node's address at
//! once, each acknowledgement tagged with the server that gave it), read back the same way
//! from the server the slot runs on after the fault.
//!
//! An acknowledgement's `task` is the server's identity (a PostgreSQL postmaster, a Redis
//! process, an etcd cluster), so two identities acknowledging over overlapping intervals are
//! two primaries, and a new identity after the fault is the slot serving again. Its key is
//! the write's number; `written_ms` is when the client got the acknowledgement (the lab's one
//! clock). The database's own recovery (WAL replay, AOF load, member join) is inside the time
//! to serve: the first acknowledgement after the fault comes only once it is done.

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};
use std::time::Instant;

use anyhow::Result;
use berth_lab::dbclient::{self, Load};
use berth_lab::dbimage::{self, Db};
use berth_lab::swarm::Role;

use super::{Backend, Deployment, History, ReadBack, System, Workload, worker_service_create};
use crate::cluster::Cluster;
use crate::verdict::Ack;

/// One database's deployment, as its own module describes it.
pub struct Spec {
    pub db: Db,
    /// The workload's name in `--workload` and the report.
    pub name: &'static str,
    /// Its client port; a run adds its seed (mod 500), so a run's leftovers never answer the
    /// next.
    pub base_port: u16,
    /// Members (Berth slots or Swarm replicas), one per worker at most.
    pub replicas: u32,
    /// `berth.failover` (move for one primary; recreate for a database that replicates itself).
    pub failover: &'static str,
    /// `berth.backend` under Berth when the failover is `recreate` (each member's own volume);
    /// `None`: the run's backend.
    pub own_backend: Option<Backend>,
    /// The service's environment for a deployment named `name` on `port`, whose members'
    /// names are given by `member` (a Swarm template) and whose first member is `first`;
    /// `peers` are the client URLs of every worker.
    pub env: fn(&EnvArgs) -> Vec<String>,
}

pub struct EnvArgs<'a> {
    pub port: u16,
    pub member: &'a str,
    pub first: &'a str,
    pub workers: &'a [String],
}

pub struct DbWorkload {
    spec: Spec,
    /// Each deployment's load and client port.
    loads: Mutex<BTreeMap<String, (Load, u16)>>,
    images: Once,
}

impl DbWorkload {
    pub fn new(spec: Spec) -> DbWorkload {
        DbWorkload {
            spec,
            loads: Mutex::new(BTreeMap::new()),
            images: Once::new(),
        }
    }

    fn port(&self, seed: u64) -> u16 {
        self.spec.base_port + (seed % 500) as u16
    }
}

fn workers(c: &Cluster) -> Vec<String> {
    c.lab
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| n.addr.clone())
        .collect()
}

/// Turns the client's acknowledgements into the verdict's.
pub fn history(acks: Vec<dbclient::DbAck>) -> History {
    History {
        acks: acks
            .into_iter()
            .map(|a| Ack {
                key: a.seq.to_string(),
                task: a.identity,
                written_ms: a.acked_ms,
                at: a.at,
            })
            .collect(),
        problems: Vec::new(),
        torn: 0,
    }
}

impl Workload for DbWorkload {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    fn deploy(
        &self,
        c: &Cluster,
        system: System,
        backend: Backend,
        seed: u64,
    ) -> Result<Deployment> {
        // Every node gets the image once; a node that restarts keeps it on its disk.
        self.images
            .call_once(|| dbimage::load_into(&c.lab, &[self.spec.db]));
        let since = Instant::now();
        let port = self.port(seed);
        let workers = workers(c);
        let s = &self.spec;
        let mut args = worker_service_create("10s");
        let (name, d) = match system {
            System::Berth => {
                let name = format!("db{seed}");
                let backend = s.own_backend.unwrap_or(backend);
                let env = (s.env)(&EnvArgs {
                    port,
                    member: "{{.Service.Name}}",
                    first: &format!("{name}-1"),
                    workers: &workers,
                });
                args.extend(
                    [
                        "--name",
                        &name,
                        "--replicas",
                        "0",
                        "--label",
                        "berth.stateful=true",
                        "--label",
                        &format!("berth.replicas={}", s.replicas),
                        "--label",
                        &format!("berth.volume={name}-{{slot}}"),
                        "--label",
                        &format!("berth.backend={backend}"),
                        "--label",
                        &format!("berth.failover={}", s.failover),
                        "--mount",
                        &format!(
                            "type=volume,source={name}-{{{{.Task.Slot}}}},target=/data,volume-driver=berth,{}",
                            backend.volume_opts()
                        ),
                    ]
                    .map(String::from),
                );
                for e in env {
                    args.extend(["--env".to_string(), e]);
                }
                let d = Deployment {
                    id: name.clone(),
                    service: format!("{name}-1"),
                    volume: Some(format!("{name}-1")),
                    remove: name.clone(),
                    storage: format!("berth {backend}, {}", s.failover),
                    backend,
                    since,
                };
                (name, d)
            }
            System::Swarm => {
                let name = format!("ds{seed}");
                let dir = match backend {
                    Backend::Shared => c.shared_dirs(&name, s.replicas)?,
                    _ => String::new(),
                };
                let Some((mount, storage)) =
                    backend.swarm_mount(&format!("{name}-{{{{.Task.Slot}}}}"), &dir)
                else {
                    anyhow::bail!("plain Swarm has no {backend} storage");
                };
                let env = (s.env)(&EnvArgs {
                    port,
                    member: &format!("{name}-{{{{.Task.Slot}}}}"),
                    first: &format!("{name}-1"),
                    workers: &workers,
                });
                args.extend(
                    [
                        "--name",
                        &name,
                        "--replicas",
                        &s.replicas.to_string(),
                        "--replicas-max-per-node",
                        "1",
                        "--mount",
                        &mount,
                    ]
                    .map(String::from),
                );
                for e in env {
                    args.extend(["--env".to_string(), e]);
                }
                let d = Deployment {
                    id: name.clone(),
                    service: name.clone(),
                    volume: None,
                    remove: name.clone(),
                    storage,
                    backend,
                    since,
                };
                (name, d)
            }
        };
        args.push(s.db.tag());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.manager().docker_ok(&args);
        let load = Load::start(s.db, &workers, port, &name);
        self.loads
            .lock()
            .expect("loads")
            .insert(d.id.clone(), (load, port));
        Ok(d)
    }

    fn history(&self, d: &Deployment) -> History {
        let acks = self
            .loads
            .lock()
            .expect("loads")
            .get(&d.id)
            .map(|(l, _)| l.acks())
            .unwrap_or_default();
        history(acks)
    }

    fn own_backend(&self) -> Option<Backend> {
        self.spec.own_backend
    }

    fn outlives_a_member(&self) -> bool {
        self.spec.replicas > 1
    }

    fn settled(&self, c: &Cluster, d: &Deployment) -> bool {
        if self.spec.db != Db::Etcd {
            return true;
        }
        let Some(port) = self
            .loads
            .lock()
            .expect("loads")
            .get(&d.id)
            .map(|(_, p)| *p)
        else {
            return false;
        };
        // Every member started, as any member that answers sees it.
        workers(c).iter().any(|a| {
            dbclient::Etcd::new(a, port, &d.id)
                .started_members()
                .is_ok_and(|n| n >= self.spec.replicas as usize)
        })
    }

    fn read_back(&self, c: &Cluster, d: &Deployment) -> ReadBack {
        let Some(port) = self
            .loads
            .lock()
            .expect("loads")
            .get(&d.id)
            .map(|(_, p)| *p)
        else {
            return ReadBack {
                surviving: Err(format!("{} was not deployed by this workload", d.id)),
                writes: Vec::new(),
                problems: Vec::new(),
                torn: 0,
            };
        };
        // The server the slot runs on; a database whose members all serve (etcd) is read
        // from any member that answers (a linearizable read).
        let mut addrs: Vec<String> = c
            .running_on(&d.service)
            .map(|(node, _)| vec![c.lab.node(&node).addr.clone()])
            .unwrap_or_default();
        if self.spec.replicas > 1 {
            addrs.extend(workers(c));
        }
        let mut why = Vec::new();
        let mut surviving = Err(format!("no task of {} is running", d.service));
        for a in &addrs {
            match dbclient::client(self.spec.db, a, port, &d.id).read_all() {
                Ok(keys) => {
                    surviving = Ok(keys.iter().map(u64::to_string).collect());
                    break;
                }
                Err(e) => why.push(format!("{a}: {e}")),
            }
        }
        if surviving.is_err() && !why.is_empty() {
            surviving = Err(why.join("; "));
        }
        if let Some((mut load, _)) = self.loads.lock().expect("loads").remove(&d.id) {
            load.stop();
        }
        ReadBack {
            surviving,
            // Each write is in one database, read above; what a deposed server accepted is
            // in its acknowledgements, which the verdict counts.
            writes: Vec::new(),
            problems: Vec::new(),
            torn: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_acknowledgement_is_keyed_by_its_number_and_owned_by_its_server() {
        let at = Instant::now();
        let h = history(vec![
            dbclient::DbAck {
                seq: 7,
                identity: "10.0.0.2/1.5/42".into(),
                target: "10.0.0.2".into(),
                acked_ms: 1000,
                at,
            },
            dbclient::DbAck {
                seq: 9,
                identity: "10.0.0.3/2.5/42".into(),
                target: "10.0.0.3".into(),
                acked_ms: 1010,
                at,
            },
        ]);
        let keys: Vec<(&str, &str, u128)> = h
            .acks
            .iter()
            .map(|a| (a.key.as_str(), a.task.as_str(), a.written_ms))
            .collect();
        assert_eq!(
            keys,
            [
                ("7", "10.0.0.2/1.5/42", 1000),
                ("9", "10.0.0.3/2.5/42", 1010)
            ]
        );
        assert!(h.problems.is_empty());
    }
}
