//! The real controller carrying a rescheduling request out, against a simulated Swarm and
//! volume control service on a clock the test moves. Two `shared` slots of one template run
//! on w1, w2 is empty and alive; an operator asks for a rebalance (margin 1). What must
//! happen: one slot (the first) stopped, fenced at its epoch, assigned to w2 at the next one, started on
//! w2 — in that order, the old task stopped before the new one starts — the other left alone,
//! and the progress and metrics say so.

use std::sync::Arc;

use bollard_stubs::models::{Service, ServiceSpec, Task, TaskState};
use futures_util::stream::BoxStream;
use serde_json::json;

use super::clock::ManualClock;
use super::rebalance::Request;
use super::*;
use crate::control::{AssignMode as WireMode, ControlError, NodeLiveness, VolumeRecord};
use crate::docker::SwarmState;
use crate::slots::slot_spec;

type Log = Arc<Mutex<Vec<(u64, String)>>>;

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a Docker object")
}

fn node(id: &str) -> bollard_stubs::models::Node {
    from_json(json!({
        "ID": id, "Version": {"Index": 1},
        "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
        "Description": {"Hostname": id}, "Status": {"State": "ready"}
    }))
}

fn template() -> Service {
    from_json(json!({
        "ID": "tmpl", "Version": {"Index": 1},
        "Spec": {
            "Name": "app_db",
            "Labels": {
                "berth.stateful": "true", "berth.volume": "db-{slot}", "berth.replicas": "2",
                "berth.failover": "move", "berth.backend": "shared"
            },
            "Mode": {"Replicated": {"Replicas": 0}},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "db:1",
                    "Mounts": [{"Type": "volume", "Source": "db-{{.Task.Slot}}", "Target": "/data",
                                "VolumeOptions": {"DriverConfig": {"Name": "berth"}}}]
                },
                "Placement": {"Constraints": ["node.role==worker"]}
            }
        }
    }))
}

fn task(id: &str, service: &str, node: &str) -> Task {
    from_json(json!({
        "ID": id, "ServiceID": service, "Slot": 1, "NodeID": node,
        "Status": {"State": "running"}, "DesiredState": "running"
    }))
}

fn replicas(spec: &ServiceSpec) -> i64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1)
}

fn pinned(spec: &ServiceSpec) -> String {
    spec.task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.as_ref())
        .and_then(|c| c.iter().find_map(|c| c.strip_prefix("node.id==")))
        .expect("a slot service is pinned")
        .to_string()
}

struct Swarm {
    state: Mutex<SwarmState>,
    clock: Arc<ManualClock>,
    log: Log,
    next_id: Mutex<u32>,
}

impl Swarm {
    fn new(clock: Arc<ManualClock>, log: Log) -> Swarm {
        let tmpl = template();
        let observed = Observed::new(SwarmState {
            services: vec![tmpl.clone()],
            ..Default::default()
        });
        let slot = |n: u64| -> Service {
            let spec = slot_spec(&observed.templates["tmpl"], n, "w1");
            from_json(json!({
                "ID": format!("slot{n}"), "Version": {"Index": 1},
                "Spec": serde_json::to_value(&spec).unwrap()
            }))
        };
        Swarm {
            state: Mutex::new(SwarmState {
                nodes: vec![node("w1"), node("w2")],
                services: vec![tmpl, slot(1), slot(2)],
                tasks: vec![task("t1", "slot1", "w1"), task("t2", "slot2", "w1")],
            }),
            clock,
            log,
            next_id: Mutex::new(10),
        }
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push((self.clock.now_ms(), what));
    }

    /// Nodes on which a task of a slot service of `slot` runs.
    fn running(&self, slot: u64) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let name = format!("app_db-{slot}");
        let ids: Vec<&str> = st
            .services
            .iter()
            .filter(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&name))
            .filter_map(|s| s.id.as_deref())
            .collect();
        st.tasks
            .iter()
            .filter(|t| ids.contains(&t.service_id.as_deref().unwrap_or_default()))
            .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
            .filter_map(|t| t.node_id.clone())
            .collect()
    }
}

impl DockerApi for Arc<Swarm> {
    async fn state(&self) -> Result<SwarmState, DockerError> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String, DockerError> {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("svc{n}")
        };
        let node = pinned(&spec);
        let name = spec.name.clone().unwrap_or_default();
        // The moved slot may start only once its old task stopped: never two writers.
        let slot: u64 = name.rsplit('-').next().unwrap().parse().unwrap();
        assert!(
            self.running(slot).is_empty(),
            "{name} starts on {node} while it runs on {:?}",
            self.running(slot)
        );
        self.note(format!("create {name} on {node}"));
        let mut st = self.state.lock().unwrap();
        if replicas(&spec) > 0 {
            st.tasks.push(task(&format!("t-{id}"), &id, &node));
        }
        st.services.push(from_json(json!({
            "ID": id, "Version": {"Index": 1}, "Spec": serde_json::to_value(&spec).unwrap()
        })));
        Ok(id)
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> Result<(), DockerError> {
        self.note(format!(
            "update {} to {} replicas",
            spec.name.clone().unwrap_or_default(),
            replicas(&spec)
        ));
        let mut st = self.state.lock().unwrap();
        let svc = st
            .services
            .iter_mut()
            .find(|s| s.id.as_deref() == Some(id))
            .ok_or_else(|| DockerError::NotFound(id.into()))?;
        let v = svc.version.as_mut().expect("a version");
        if v.index != Some(version) {
            return Err(DockerError::Conflict(id.into()));
        }
        v.index = Some(version + 1);
        let stop = replicas(&spec) == 0;
        svc.spec = Some(spec);
        if stop {
            for t in st
                .tasks
                .iter_mut()
                .filter(|t| t.service_id.as_deref() == Some(id))
            {
                t.desired_state = Some(TaskState::SHUTDOWN);
                t.status.as_mut().expect("a status").state = Some(TaskState::SHUTDOWN);
            }
        }
        Ok(())
    }

    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        self.note(format!("remove {id}"));
        let mut st = self.state.lock().unwrap();
        st.services.retain(|s| s.id.as_deref() != Some(id));
        st.tasks.retain(|t| t.service_id.as_deref() != Some(id));
        Ok(())
    }

    async fn set_node_label(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), DockerError> {
        self.note(format!("label {node} {key}={value:?}"));
        Ok(())
    }

    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        Box::pin(futures_util::stream::pending())
    }
}

/// Both volumes on w1 at epoch 3; both agents heartbeat.
struct Control {
    volumes: Mutex<Vec<VolumeRecord>>,
    clock: Arc<ManualClock>,
    log: Log,
}

impl Control {
    fn new(clock: Arc<ManualClock>, log: Log) -> Control {
        let record = |name: &str, id: &str| -> VolumeRecord {
            from_json(json!({
                "name": name, "dataset_id": id, "epoch": 3, "primary": "w1",
                "fenced_from": null, "backend": "shared", "mounted_on": "w1", "standbys": [],
                "whole_copy_on": ["w1"], "replicas": 0, "maximum_size": null, "profile": null,
                "version": 1, "source": null, "recreated": false, "promoted": false
            }))
        };
        Control {
            volumes: Mutex::new(vec![record("db-1", "d1"), record("db-2", "d2")]),
            clock,
            log,
        }
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push((self.clock.now_ms(), what));
    }
}

impl ControlApi for Arc<Control> {
    async fn volumes(&self) -> Result<Vec<VolumeRecord>, ControlError> {
        Ok(self.volumes.lock().unwrap().clone())
    }

    async fn liveness(&self) -> Result<Vec<NodeLiveness>, ControlError> {
        let n = |node: &str| NodeLiveness {
            node: node.into(),
            host: node.into(),
            alive: true,
            last_heartbeat_age_ms: Some(200),
            unheard_for_ms: None,
            lease_expires_in_ms: 4_800,
            dead: false,
            docker_reachable: Some(true),
        };
        Ok(vec![n("w1"), n("w2")])
    }

    async fn fence(&self, name: &str, node: &str, expect_epoch: u64) -> Result<u64, ControlError> {
        self.note(format!("fence {name} from {node} at {expect_epoch}"));
        let mut vols = self.volumes.lock().unwrap();
        let v = vols.iter_mut().find(|v| v.name == name).expect("a volume");
        if v.epoch != expect_epoch {
            return Err(ControlError::Refused {
                current_epoch: Some(v.epoch),
                reason: "stale epoch".into(),
            });
        }
        v.epoch += 1;
        v.primary = None;
        v.mounted_on = None;
        v.fenced_from = Some(node.into());
        Ok(v.epoch)
    }

    async fn assign(
        &self,
        name: &str,
        node: &str,
        epoch: u64,
        mode: WireMode,
    ) -> Result<(), ControlError> {
        self.note(format!("assign {name} to {node} at {epoch} ({mode:?})"));
        let mut vols = self.volumes.lock().unwrap();
        let v = vols.iter_mut().find(|v| v.name == name).expect("a volume");
        if v.epoch != epoch {
            return Err(ControlError::Refused {
                current_epoch: Some(v.epoch),
                reason: "stale epoch".into(),
            });
        }
        v.primary = Some(node.into());
        v.mounted_on = Some(node.into());
        v.fenced_from = None;
        Ok(())
    }
}

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Runs the controller for 20 s of the test's clock in 50 ms steps; with `request`, an
/// operator asks for a rebalance (margin 1) after 1 s. Returns the log (clock ms since the
/// start, what), the swarm, the status and the metrics.
async fn run(config: Config, request: bool) -> (Vec<(u64, String)>, Arc<Swarm>, Status, Metrics) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let t0 = clock.now_ms();
    let log: Log = Arc::default();
    let swarm = Arc::new(Swarm::new(clock.clone(), log.clone()));
    let control = Arc::new(Control::new(clock.clone(), log.clone()));
    let metrics = Metrics::new();
    let controller = Arc::new(
        Controller::with_control(swarm.clone(), Some(control), None, config, metrics.clone())
            .with_clock(clock.clone()),
    );
    let status = controller.status();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = controller.clone().run(async move {
        let _ = stop_rx.await;
    });
    let drive = async {
        let step = Duration::from_millis(50);
        for i in 0..400 {
            settle().await;
            if i == 20 && request {
                // After a few quiet passes: nothing moved on its own (no automatic mode).
                assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
                status.lock().unwrap().rebalance_request = Some(Request {
                    margin: Some(1),
                    id: 1,
                    ..Request::default()
                });
                controller.waker().notify_one();
            }
            clock.advance(step);
        }
        settle().await;
        let _ = stop_tx.send(());
    };
    tokio::join!(run, drive);
    let log = log
        .lock()
        .unwrap()
        .iter()
        .map(|(t, w)| (t.saturating_sub(t0), w.clone()))
        .collect();
    let status = status.lock().unwrap().clone();
    (log, swarm, status, metrics)
}

/// One move of slot 1 to w2, in order (the planner's tie-break: equal epochs, the lower
/// slot); slot 2 stays.
fn moved_slot_one(log: &[(u64, String)], swarm: &Swarm) {
    let what: Vec<&str> = log.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        what,
        [
            "update app_db-1 to 0 replicas",
            "fence db-1 from w1 at 3",
            "assign db-1 to w2 at 4 (Move)",
            "remove slot1",
            "create app_db-1 on w2",
        ],
        "{log:#?}"
    );
    assert_eq!(swarm.running(1), ["w2"]);
    assert_eq!(swarm.running(2), ["w1"]);
}

#[tokio::test]
async fn an_operator_s_request_moves_one_slot_to_the_empty_node_one_writer_at_a_time() {
    let (log, swarm, status, metrics) = run(Config::default(), true).await;
    moved_slot_one(&log, &swarm);
    let p = status.rebalance;
    assert!(!p.running, "{p:?}");
    assert_eq!(p.request, Some(1));
    assert_eq!(p.by.as_deref(), Some("operator"));
    assert_eq!(p.moves.len(), 1, "{p:?}");
    assert_eq!(p.moves[0].state, "moved");
    assert_eq!(p.moves[0].mode, "re-point");
    assert!(p.moves[0].downtime_ms.is_some(), "{p:?}");
    let text = metrics.render();
    assert!(
        text.contains("berth_rebalance_moves_total{result=\"moved\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_rebalance_downtime_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_automatic_mode_moves_once_the_cluster_was_quiet_and_only_then() {
    let config = Config {
        rebalance: Some(super::rebalance::Auto {
            budget: berth_scheduler::rebalance::Budget {
                margin: 1,
                max_moves: Some(1),
                ..Default::default()
            },
            quiet: Duration::from_secs(5),
        }),
        ..Config::default()
    };
    let (log, swarm, status, _) = run(config, false).await;
    moved_slot_one(&log, &swarm);
    let (first, _) = &log[0];
    assert!(
        (5_000..=5_000 + 10_000).contains(first),
        "the first stop at {first} ms, after the 5 s quiet window (and within a resync)"
    );
    assert_eq!(status.rebalance.by.as_deref(), Some("berth"));
    assert!(status.rebalance.auto);
}
