//! The real controller — its loop, the heartbeat detector's poll, the executor's driver and the
//! commands' I/O — run against a simulated Swarm and volume control service, on a clock the
//! test moves. One stateful slot (`shared`, `move`) runs on w1; w1's agent stops heartbeating.
//! What must happen, in this order: the fence label, the fence, the old task stopped, the data
//! handed to w2, the slot started on w2 — and the start never while the old task may still run
//! on a node Swarm reaches, unless a lease-long wait has passed.

use std::sync::Arc;

use bollard_stubs::models::{Service, ServiceSpec, Task};
use futures_util::stream::BoxStream;
use serde_json::json;

use super::clock::ManualClock;
use super::*;
use crate::control::{AssignMode as WireMode, ControlError, NodeLiveness, VolumeRecord};
use crate::docker::SwarmState;
use crate::slots::slot_spec;

/// What happened, in order, on both fakes: (clock ms, what).
type Log = Arc<Mutex<Vec<(u64, String)>>>;

/// How Swarm treats the slot's old task on w1 when asked to stop it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum W1 {
    /// Ready, and its dockerd stops the task (the agent alone died).
    StopsTask,
    /// Ready, but the task is never reported stopped (a hung dockerd).
    Hangs,
    /// Down: the managers no longer reach it; its task stays `running` in the API.
    Down,
}

/// Swarm's own leader lost (it died with w1): until `no_leader_until` (ms of the test's clock)
/// its API answers nothing, then every node is `unknown` until `unknown_until`, while each
/// reconnects to the new leader, as SwarmKit's dispatcher reports them.
#[derive(Clone, Copy)]
struct Election {
    no_leader_until: u64,
    unknown_until: u64,
    /// Whether the engine sends an event when the nodes are Ready again (a node `update`).
    events: bool,
}

impl Election {
    /// 0: no leader, 1: nodes unknown, 2: settled.
    fn phase(&self, now: u64) -> u8 {
        if now < self.no_leader_until {
            0
        } else if now < self.unknown_until {
            1
        } else {
            2
        }
    }
}

struct FakeSwarm {
    state: Mutex<SwarmState>,
    w1: W1,
    election: Option<Election>,
    /// When the swarm was read (ms of the test's clock).
    reads: Mutex<Vec<u64>>,
    clock: Arc<ManualClock>,
    log: Log,
    next_id: Mutex<u32>,
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a Docker object")
}

fn node(id: &str, state: &str) -> bollard_stubs::models::Node {
    from_json(json!({
        "ID": id, "Version": {"Index": 1},
        "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
        "Description": {"Hostname": id}, "Status": {"State": state}
    }))
}

fn template() -> Service {
    from_json(json!({
        "ID": "tmpl", "Version": {"Index": 1},
        "Spec": {
            "Name": "app_db",
            "Labels": {
                "berth.stateful": "true", "berth.volume": "db-{slot}", "berth.replicas": "1",
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

impl FakeSwarm {
    fn new(w1: W1, clock: Arc<ManualClock>, log: Log) -> FakeSwarm {
        let tmpl = template();
        let observed = Observed::new(SwarmState {
            services: vec![tmpl.clone()],
            ..Default::default()
        });
        let spec = slot_spec(&observed.templates["tmpl"], 1, "w1");
        let slot: Service = from_json(json!({
            "ID": "slot1", "Version": {"Index": 1}, "Spec": serde_json::to_value(&spec).unwrap()
        }));
        let w1_state = if w1 == W1::Down { "down" } else { "ready" };
        FakeSwarm {
            state: Mutex::new(SwarmState {
                nodes: vec![node("w1", w1_state), node("w2", "ready")],
                services: vec![tmpl, slot],
                tasks: vec![task("t1", "slot1", "w1")],
            }),
            w1,
            election: None,
            reads: Mutex::new(Vec::new()),
            clock,
            log,
            next_id: Mutex::new(2),
        }
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push((self.clock.now_ms(), what));
    }

    fn id(&self, prefix: &str) -> String {
        let mut n = self.next_id.lock().unwrap();
        *n += 1;
        format!("{prefix}{n}")
    }

    /// Swarm's reaction to a task no longer wanted on `node`.
    fn stop_task(&self, t: &mut Task) {
        t.desired_state = Some(bollard_stubs::models::TaskState::SHUTDOWN);
        let reachable_and_working = t.node_id.as_deref() != Some("w1") || self.w1 == W1::StopsTask;
        if reachable_and_working {
            t.status.as_mut().expect("a status").state =
                Some(bollard_stubs::models::TaskState::SHUTDOWN);
        }
    }

    fn task_runs(&self, service: &str, node: &str) -> bool {
        self.state.lock().unwrap().tasks.iter().any(|t| {
            t.service_id.as_deref() == Some(service)
                && t.node_id.as_deref() == Some(node)
                && t.status.as_ref().and_then(|s| s.state)
                    == Some(bollard_stubs::models::TaskState::RUNNING)
        })
    }
}

impl DockerApi for FakeSwarm {
    async fn state(&self) -> Result<SwarmState, DockerError> {
        self.reads.lock().unwrap().push(self.clock.now_ms());
        let mut st = self.state.lock().unwrap().clone();
        match self.election.map(|e| e.phase(self.clock.now_ms())) {
            Some(0) => {
                return Err(DockerError::Unavailable(
                    "503 The swarm does not have a leader".into(),
                ));
            }
            Some(1) => {
                for n in &mut st.nodes {
                    n.status.as_mut().expect("a status").state =
                        Some(bollard_stubs::models::NodeState::UNKNOWN);
                }
            }
            _ => {}
        }
        Ok(st)
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String, DockerError> {
        let id = self.id("svc");
        let node = pinned(&spec);
        self.note(format!(
            "create {} on {node}",
            spec.name.clone().unwrap_or_default()
        ));
        let mut st = self.state.lock().unwrap();
        if replicas(&spec) > 0 {
            let t = self.id("t");
            st.tasks.push(task(&t, &id, &node));
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
        let mut tasks = std::mem::take(&mut st.tasks);
        if stop {
            for t in tasks
                .iter_mut()
                .filter(|t| t.service_id.as_deref() == Some(id))
            {
                self.stop_task(t);
            }
        }
        st.tasks = tasks;
        Ok(())
    }

    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        self.note(format!("remove {id}"));
        let mut st = self.state.lock().unwrap();
        st.services.retain(|s| s.id.as_deref() != Some(id));
        let mut tasks = std::mem::take(&mut st.tasks);
        for t in tasks
            .iter_mut()
            .filter(|t| t.service_id.as_deref() == Some(id))
        {
            self.stop_task(t);
        }
        st.tasks = tasks;
        Ok(())
    }

    async fn set_node_label(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), DockerError> {
        self.note(format!("label {node} {key}={value:?}"));
        let mut st = self.state.lock().unwrap();
        let n = st
            .nodes
            .iter_mut()
            .find(|n| n.id.as_deref() == Some(node))
            .ok_or_else(|| DockerError::NotFound(node.into()))?;
        let labels = n
            .spec
            .as_mut()
            .expect("a spec")
            .labels
            .get_or_insert_default();
        match value {
            Some(v) => labels.insert(key.into(), v.into()),
            None => labels.remove(key),
        };
        Ok(())
    }

    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        let Some(e) = self.election.filter(|e| e.events) else {
            return Box::pin(futures_util::stream::pending());
        };
        // An event when the nodes are Ready again (node `update` events); none for the
        // election itself, which changes no object.
        let clock = self.clock.clone();
        let first = e.phase(clock.now_ms());
        Box::pin(futures_util::stream::unfold(first, move |last| {
            let clock = clock.clone();
            async move {
                loop {
                    clock.sleep(Duration::from_millis(100)).await;
                    let p = e.phase(clock.now_ms());
                    if p != last && p == 2 {
                        return Some((Ok(()), p));
                    }
                }
            }
        }))
    }
}

/// The volume control service: one `shared` volume held by w1 at epoch 3; w1's agent is
/// silent from the start, and its lease ends at `lease_end` (ms of the test's clock); w2's
/// agent heartbeats. A fence waits for the lease (423, as the real one).
struct FakeControl {
    volumes: Mutex<Vec<VolumeRecord>>,
    lease_end: u64,
    clock: Arc<ManualClock>,
    log: Log,
}

impl FakeControl {
    fn new(lease_end: u64, clock: Arc<ManualClock>, log: Log) -> FakeControl {
        let record: VolumeRecord = from_json(json!({
            "name": "db-1", "dataset_id": "d1", "epoch": 3, "primary": "w1",
            "fenced_from": null, "backend": "shared", "mounted_on": "w1", "standbys": [],
            "whole_copy_on": ["w1"], "replicas": 0, "maximum_size": null, "profile": null,
            "version": 1, "source": null, "recreated": false, "promoted": false
        }));
        FakeControl {
            volumes: Mutex::new(vec![record]),
            lease_end,
            clock,
            log,
        }
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push((self.clock.now_ms(), what));
    }
}

impl ControlApi for FakeControl {
    async fn volumes(&self) -> Result<Vec<VolumeRecord>, ControlError> {
        Ok(self.volumes.lock().unwrap().clone())
    }

    async fn liveness(&self) -> Result<Vec<NodeLiveness>, ControlError> {
        let lease_left = self.lease_end.saturating_sub(self.clock.now_ms());
        let n = |node: &str, alive: bool| NodeLiveness {
            node: node.into(),
            host: node.into(),
            alive,
            last_heartbeat_age_ms: Some(if alive { 200 } else { 3_000 }),
            unheard_for_ms: None,
            lease_expires_in_ms: if alive { 4_800 } else { lease_left },
            dead: false,
            docker_reachable: Some(true),
        };
        Ok(vec![n("w1", false), n("w2", true)])
    }

    async fn fence(&self, name: &str, node: &str, expect_epoch: u64) -> Result<u64, ControlError> {
        self.note(format!("fence attempt {name}"));
        let lease_left = self.lease_end.saturating_sub(self.clock.now_ms());
        if lease_left > 0 {
            return Err(ControlError::NotYet {
                reason: format!("{node}'s lease runs"),
                retry_after: Some(Duration::from_millis(lease_left)),
            });
        }
        self.note(format!("fence {name} from {node} at {expect_epoch}"));
        let mut vols = self.volumes.lock().unwrap();
        let v = vols.iter_mut().find(|v| v.name == name).expect("a volume");
        if v.epoch == expect_epoch + 1 && v.fenced_from.as_deref() == Some(node) {
            return Ok(v.epoch); // a replay
        }
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
        v.fenced_from = None;
        Ok(())
    }
}

/// Lets every ready task run (the runtime is single-threaded: nothing runs until the test
/// yields).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Runs the controller for `total` of the test's clock, in 50 ms steps; returns the log and
/// the swarm as they end.
async fn run_failover(
    w1: W1,
    lease_end: u64,
    total: Duration,
) -> (Vec<(u64, String)>, Arc<FakeSwarm>) {
    run_failover_in(w1, lease_end, total, None).await
}

async fn run_failover_in(
    w1: W1,
    lease_end: u64,
    total: Duration,
    election: Option<Election>,
) -> (Vec<(u64, String)>, Arc<FakeSwarm>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let log: Log = Arc::default();
    let mut swarm = FakeSwarm::new(w1, clock.clone(), log.clone());
    swarm.election = election;
    let swarm = Arc::new(swarm);
    let control = FakeControl::new(lease_end, clock.clone(), log.clone());
    let controller = Arc::new(
        Controller::with_control(
            Shared(swarm.clone()),
            Some(control),
            None,
            Config::default(),
            Metrics::new(),
        )
        .with_clock(clock.clone()),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = controller.clone().run(async move {
        let _ = stop_rx.await;
    });
    let drive = async {
        let step = Duration::from_millis(50);
        let mut passed = Duration::ZERO;
        while passed < total {
            settle().await;
            clock.advance(step);
            passed += step;
        }
        settle().await;
        let _ = stop_tx.send(());
    };
    tokio::join!(run, drive);
    let log = log.lock().unwrap().clone();
    (log, swarm)
}

/// The controller's `DockerApi` over a fake the test keeps a handle on.
struct Shared(Arc<FakeSwarm>);

impl DockerApi for Shared {
    async fn state(&self) -> Result<SwarmState, DockerError> {
        self.0.state().await
    }
    async fn create_service(&self, spec: ServiceSpec) -> Result<String, DockerError> {
        self.0.create_service(spec).await
    }
    async fn update_service(&self, id: &str, v: u64, spec: ServiceSpec) -> Result<(), DockerError> {
        self.0.update_service(id, v, spec).await
    }
    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        self.0.remove_service(id).await
    }
    async fn set_node_label(&self, n: &str, k: &str, v: Option<&str>) -> Result<(), DockerError> {
        self.0.set_node_label(n, k, v).await
    }
    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        self.0.changes()
    }
}

fn at(log: &[(u64, String)], prefix: &str) -> (usize, u64) {
    log.iter()
        .enumerate()
        .find(|(_, (_, w))| w.starts_with(prefix))
        .map(|(i, (t, _))| (i, *t))
        .unwrap_or_else(|| panic!("no `{prefix}` in {log:#?}"))
}

/// What happened, fence attempts left out.
fn what(log: &[(u64, String)]) -> Vec<&str> {
    log.iter()
        .map(|(_, w)| w.as_str())
        .filter(|w| !w.starts_with("fence attempt"))
        .collect()
}

/// w1's lease, from its last heartbeat: it ends 4 s into the test.
const LEASE_END: u64 = 4_000;

#[tokio::test]
async fn a_node_swarm_still_reaches_has_its_task_stopped_before_the_slot_starts_elsewhere() {
    let (log, swarm) = run_failover(W1::StopsTask, LEASE_END, Duration::from_secs(10)).await;
    assert_eq!(
        what(&log),
        [
            "label w1 berth.fenced=Some(\"true\")",
            "fence db-1 from w1 at 3",
            "update app_db-1 to 0 replicas",
            "assign db-1 to w2 at 4 (Move)",
            "remove slot1",
            "create app_db-1 on w2",
        ],
        "{log:#?}"
    );
    // The fence waited for w1's lease, as ever; only then was the old task stopped (a node back
    // within its lease keeps its task), and it was seen stopped at once.
    let (_, fence) = at(&log, "fence db-1");
    assert_eq!(fence, LEASE_END);
    let (_, stop) = at(&log, "update app_db-1 to 0");
    assert_eq!(stop, LEASE_END, "stopped once fenced, not before");
    let (_, create) = at(&log, "create");
    assert_eq!(create, LEASE_END);
    assert!(!swarm.task_runs("slot1", "w1"));
    assert!(
        swarm.task_runs(&service_id(&swarm, "app_db-1"), "w2"),
        "the slot runs on w2"
    );
}

#[tokio::test]
async fn the_old_task_is_left_alone_until_the_lease_ends() {
    // Swarm would stop the task at once if asked: it is not asked before the fence.
    let (log, _) = run_failover(W1::StopsTask, LEASE_END, Duration::from_secs(10)).await;
    let (i_fence, fence) = at(&log, "fence db-1");
    let (i_stop, stop) = at(&log, "update app_db-1 to 0");
    assert!(i_fence < i_stop, "{log:#?}");
    assert!(stop >= LEASE_END && fence >= LEASE_END, "{log:#?}");
}

#[tokio::test]
async fn a_task_not_seen_to_stop_after_the_fence_is_not_waited_for() {
    // The lease has ended by the time the fence goes through, so the node's data path admits no
    // write: a task Swarm does not report stopped (a hung engine) holds nothing up.
    for lease_end in [LEASE_END, 12_000] {
        let (log, swarm) = run_failover(W1::Hangs, lease_end, Duration::from_secs(15)).await;
        let (i_fence, fence) = at(&log, "fence db-1");
        let (i_stop, _) = at(&log, "update app_db-1 to 0");
        let (i_create, create) = at(&log, "create app_db-1 on w2");
        assert!(i_fence < i_stop && i_stop < i_create, "{log:#?}");
        assert!(fence >= lease_end, "{log:#?}");
        assert!(
            create - fence < 300,
            "the hung task was not waited for after the fence: {log:#?}"
        );
        assert!(
            swarm.task_runs("slot1", "w1"),
            "the fake's hung task is still reported running"
        );
    }
}

#[tokio::test]
async fn a_node_swarm_cannot_reach_is_not_waited_on() {
    let (log, _) = run_failover(W1::Down, 12_000, Duration::from_secs(15)).await;
    let (_, fence) = at(&log, "fence db-1");
    let (_, create) = at(&log, "create app_db-1 on w2");
    assert!(fence >= 12_000, "{log:#?}");
    assert!(
        create - fence < 300,
        "w1 is Down for Swarm: its task cannot be stopped, so it is not waited for: {log:#?}"
    );
}

/// A stop re-issued after a crash (the journal said it was in flight) changes nothing: the
/// service is at 0 replicas already, and the stop is seen at once.
#[tokio::test]
async fn a_replayed_stop_is_a_no_op() {
    let clock = Arc::new(ManualClock::new(0));
    let log: Log = Arc::default();
    let swarm = FakeSwarm::new(W1::StopsTask, clock.clone(), log.clone());
    let control = FakeControl::new(LEASE_END, clock.clone(), log.clone());
    let stop = ExecCommand::StopSlot {
        service: "app_db".into(),
        slot: 1,
        node: berth_scheduler::model::NodeId::new("w1"),
        wait_ms: Some(5_000),
    };
    for _ in 0..2 {
        let out = failover::perform(&swarm, Some(&control), clock.as_ref(), &stop).await;
        assert_eq!(out, Outcome::Done);
    }
    assert_eq!(
        what(&log.lock().unwrap()),
        ["update app_db-1 to 0 replicas"]
    );
    assert!(!swarm.task_runs("slot1", "w1"));
}

/// The manager running `berth run` died with w1 and took Swarm's leader with it: Swarm's API
/// answers nothing for 8 s (its managers elect a new leader), then reports every node unknown
/// for 1.5 s. The failover neither gives up on the API's errors nor backs off past the
/// election, and the slot left without a target while every node is unknown is planned again
/// once w2 is Ready — whether or not an event says so (the swarm is read every second while
/// the slot waits): it starts on w2 within a second or so of that, fenced once.
#[tokio::test]
async fn a_failover_waits_out_swarm_s_leader_election_and_starts_once_a_node_is_ready() {
    for events in [true, false] {
        a_failover_across_swarm_s_leader_election(events).await;
    }
}

async fn a_failover_across_swarm_s_leader_election(events: bool) {
    let election = Election {
        no_leader_until: 8_000,
        unknown_until: 9_500,
        events,
    };
    let (log, swarm) =
        run_failover_in(W1::Down, LEASE_END, Duration::from_secs(20), Some(election)).await;
    let (_, create) = at(&log, "create app_db-1 on w2");
    assert!(
        (9_500..11_000).contains(&create),
        "events {events}: started {create} ms in: not before w2 was Ready (9.5 s), nor long after: {log:#?}"
    );
    // The fence of the plan that found no target is replayed by the next plan, not repeated:
    // the data moves at epoch 4, one above the holder's.
    assert!(
        what(&log).contains(&"assign db-1 to w2 at 4 (Move)"),
        "{log:#?}"
    );
    assert!(
        swarm.task_runs(&service_id(&swarm, "app_db-1"), "w2"),
        "the slot runs on w2"
    );
}

/// Swarm's API does not answer for 8 s and no event comes when it does again: the passes that
/// fail meanwhile are retried at most a second apart, not at the errors' exponential backoff
/// (which would have reached 8 s by then), so the failover goes on within a second of the
/// election's end.
#[tokio::test]
async fn a_swarm_api_outage_is_retried_every_second_not_at_the_error_backoff() {
    let election = Election {
        no_leader_until: 8_000,
        unknown_until: 8_000,
        events: false,
    };
    let (log, _) =
        run_failover_in(W1::Down, LEASE_END, Duration::from_secs(20), Some(election)).await;
    let (_, create) = at(&log, "create app_db-1 on w2");
    assert!(
        (8_000..9_300).contains(&create),
        "started {create} ms in: within a second of Swarm's API answering (8 s): {log:#?}"
    );
}

/// A slot that finds no node for good (every node stays unknown) has the swarm read every second
/// only for `room_poll_for` (60 s), then at the resync's pace: a slot with nowhere to go does
/// not cost a read of the whole swarm every second forever.
#[tokio::test]
async fn a_slot_with_nowhere_to_go_is_not_polled_for_ever() {
    let election = Election {
        no_leader_until: 0,
        unknown_until: u64::MAX,
        events: false,
    };
    let (log, swarm) = run_failover_in(
        W1::Down,
        LEASE_END,
        Duration::from_secs(150),
        Some(election),
    )
    .await;
    assert!(
        !what(&log).iter().any(|w| w.starts_with("create")),
        "{log:#?}"
    );
    let reads = swarm.reads.lock().unwrap().clone();
    let between = |a: u64, b: u64| reads.iter().filter(|t| (a..b).contains(*t)).count();
    assert!(
        between(10_000, 50_000) >= 30,
        "read every second while it waits: {reads:?}"
    );
    assert!(
        between(80_000, 150_000) <= 14,
        "then at the resync's pace (10 s): {reads:?}"
    );
}

/// The ID of the fake Swarm's service named `name` (a slot's service is replaced on a move, so
/// its ID is read after the failover).
fn service_id(swarm: &FakeSwarm, name: &str) -> String {
    let st = swarm.state.lock().unwrap();
    st.services
        .iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
        .and_then(|s| s.id.clone())
        .expect("the slot's service")
}
