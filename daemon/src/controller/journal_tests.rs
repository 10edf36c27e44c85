//! The failover journal in Consul KV (`berth run --consul`), against [`FakeAgent`]: each write
//! is a transaction fenced by the leader session, a deposed leader's write is refused and starts
//! nothing, and the daemon that takes over resumes the commands the old leader journaled. The
//! tests drive the election rounds and the passes themselves: no timer decides.

use std::sync::Arc;

use berth_scheduler::executor::{CommandId, ExecutorState, InFlight};
use berth_scheduler::model::NodeId;
use bollard_stubs::models::ServiceSpec;
use futures_util::stream::BoxStream;

use super::*;
use crate::consul::election::{ElectionConfig, Elector, elector as new_elector};
use crate::consul::fake::{AgentState, FakeAgent, KvEntry};
use crate::consul::journal::ConsulJournal;
use crate::consul::{Agent, fake};
use crate::docker::SwarmState;
use berth_leadership::Leadership;

const LEADER_KEY: &str = "berth/leader";
const JOURNAL_KEY: &str = "berth/executor";
const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_secs(15);

/// An empty swarm whose node-label calls are recorded, each with the journal Consul held at
/// that moment (the state must be durable before any command starts).
struct Labels {
    consul: Arc<Mutex<AgentState>>,
    /// Per call: the node, the journal, and how many journal writes Consul had accepted.
    calls: Mutex<Vec<(String, Option<ExecutorState>, u64)>>,
}

impl DockerApi for Labels {
    async fn state(&self) -> Result<crate::docker::SwarmState, DockerError> {
        Ok(SwarmState::default())
    }
    async fn create_service(&self, _: ServiceSpec) -> Result<String, DockerError> {
        panic!("no service write expected")
    }
    async fn update_service(&self, _: &str, _: u64, _: ServiceSpec) -> Result<(), DockerError> {
        panic!("no service write expected")
    }
    async fn remove_service(&self, _: &str) -> Result<(), DockerError> {
        panic!("no service write expected")
    }
    async fn set_node_label(
        &self,
        node: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<(), DockerError> {
        let st = self.consul.lock().unwrap();
        let version = st.kv.get(JOURNAL_KEY).map_or(0, |e| e.modify_index);
        self.calls
            .lock()
            .unwrap()
            .push((node.to_string(), journaled(&st), version));
        Ok(())
    }
    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        Box::pin(futures_util::stream::pending())
    }
}

type Daemon = Arc<Controller<Labels>>;

fn journaled(st: &AgentState) -> Option<ExecutorState> {
    st.kv
        .get(JOURNAL_KEY)
        .map(|e| serde_json::from_slice(&e.value).expect("the journal decodes"))
}

fn daemon(fake: &FakeAgent, name: &str) -> (Elector, Arc<Leadership>, Daemon) {
    let agent = || Agent::new(&fake.url, None, Duration::from_secs(5)).expect("agent");
    let config = ElectionConfig {
        key: LEADER_KEY.into(),
        ttl: TTL,
        lock_delay: LOCK_DELAY,
        identity: name.into(),
    };
    let consul =
        berth_consul::Consul::new(&fake.url, None, Duration::from_secs(5)).expect("consul");
    let (elector, leadership) = new_elector(consul, config);
    let journal = Journal::store(ConsulJournal::new(
        agent(),
        JOURNAL_KEY,
        LEADER_KEY,
        elector.fence(),
    ));
    let docker = Labels {
        consul: fake.state.clone(),
        calls: Mutex::new(Vec::new()),
    };
    let controller = Controller::with_control(
        docker,
        None::<ControlClient>,
        Some((journal, None)),
        Config::default(),
        Metrics::new(),
    )
    .with_leadership(leadership.clone());
    (elector, leadership, Arc::new(controller))
}

/// A node label to set, handed out and not completed: the state of a leader that died with
/// that command in flight.
fn with_label_in_flight(mut state: ExecutorState, id: u64, node: &str) -> ExecutorState {
    state.inflight.insert(
        CommandId(id),
        InFlight {
            command: ExecCommand::SetFenceLabel {
                node: NodeId::new(node),
            },
            lane: None,
            issued: true,
        },
    );
    state.next_id = state.next_id.max(id + 1);
    state
}

/// A fresh executor's state, as `berth run` configures it.
fn fresh_state() -> ExecutorState {
    Driver::new(exec_config(&Config::default()), Timers::Polled, true)
        .state()
        .clone()
}

/// The daemon's executor replaced by one holding `state` (memory the journal does not have).
fn replace_state(d: &Daemon, state: ExecutorState) {
    let now = d.clock.now_ms();
    d.driver
        .lock()
        .unwrap()
        .resume(Some(state), exec_config(&Config::default()), now);
}

fn put(fake: &FakeAgent, value: &[u8]) {
    let mut st = fake.state.lock().unwrap();
    st.index += 1;
    let index = st.index;
    st.kv.insert(
        JOURNAL_KEY.into(),
        KvEntry {
            value: value.to_vec(),
            session: None,
            lock_index: 0,
            create_index: index,
            modify_index: index,
        },
    );
}

/// The labels set so far, once the spawned commands ran.
async fn labels(d: &Daemon) -> Vec<(String, Option<ExecutorState>, u64)> {
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    d.docker.calls.lock().unwrap().clone()
}

fn journal_txns(st: &AgentState) -> Vec<&fake::Request> {
    st.requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1/txn")
        .collect()
}

fn commands(state: &ExecutorState) -> Vec<(CommandId, ExecCommand)> {
    state
        .inflight
        .iter()
        .map(|(id, f)| (*id, f.command.clone()))
        .collect()
}

#[tokio::test]
async fn the_journal_is_fenced_by_the_leader_session_and_the_next_leader_resumes_it() {
    let fake = FakeAgent::start(None).await;
    let (mut ea, la, a) = daemon(&fake, "m1");
    let (mut eb, lb, b) = daemon(&fake, "m2");
    // A previous leader died with a label command in flight.
    let seed = with_label_in_flight(fresh_state(), 1, "w1");
    put(&fake, &executor::driver::encode(&seed));
    ea.round().await.unwrap();
    eb.round().await.unwrap();
    assert!(la.is_leader() && !lb.is_leader());

    // A takes the lead: it reads the journal, and re-issues the command in flight.
    assert!(a.journal.as_ref().unwrap().needs_load());
    a.resume().await.expect("journal read");
    assert!(!a.journal.as_ref().unwrap().needs_load());
    a.reconcile().await.expect("a pass");
    let session_a = ea.lock().session().unwrap().to_string();
    let seeded = fake.state.lock().unwrap().kv[JOURNAL_KEY].create_index;
    {
        let st = fake.state.lock().unwrap();
        let txns = journal_txns(&st);
        assert_eq!(txns.len(), 1, "one journal write: one transaction");
        let ops = txns[0].body.as_array().expect("a list of operations");
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["KV"]["Verb"], "check-session");
        assert_eq!(ops[0]["KV"]["Key"], LEADER_KEY);
        assert_eq!(ops[0]["KV"]["Session"], session_a.as_str());
        assert_eq!(ops[1]["KV"]["Verb"], "cas");
        assert_eq!(ops[1]["KV"]["Key"], JOURNAL_KEY);
        assert_eq!(
            ops[1]["KV"]["Index"], st.kv[JOURNAL_KEY].create_index,
            "check-and-set on the version read"
        );
    }
    let calls = labels(&a).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].0, "w1",
        "the journaled command in flight, issued again"
    );
    assert!(
        calls[0].2 > seeded,
        "A's journal write was accepted before the command started"
    );
    let written = calls[0].1.clone().expect("a journal");
    assert!(
        written.inflight[&CommandId(1)].issued,
        "the journal said the command was issued before it started"
    );
    let journal_a = journaled(&fake.state.lock().unwrap()).unwrap();
    assert_eq!(journal_a, written);

    // More work for A (a second command in flight), then its session ends: A's next pass is
    // refused by Consul, starts nothing, and A steps down.
    let more = with_label_in_flight(a.driver.lock().unwrap().state().clone(), 2, "w2");
    replace_state(&a, more);
    fake.expire_session(&session_a);
    assert!(la.is_leader(), "A has not heard of it yet");
    let err = a
        .reconcile()
        .await
        .expect_err("the journal write is refused");
    assert!(matches!(err, ReconcileError::NotLeader), "{err}");
    assert!(!la.is_leader(), "a refused journal write steps down");
    assert_eq!(labels(&a).await.len(), 1, "no command started");
    assert_eq!(
        journaled(&fake.state.lock().unwrap()).unwrap(),
        journal_a,
        "the journal is A's last accepted write"
    );
    assert!(
        a.journal.as_ref().unwrap().needs_load(),
        "read again before A acts again"
    );

    // B takes over after the lock-delay and resumes exactly what A journaled.
    fake.advance(LOCK_DELAY);
    eb.round().await.unwrap();
    ea.round().await.unwrap();
    assert!(lb.is_leader() && !la.is_leader());
    b.resume().await.expect("journal read");
    {
        let ex = b.driver.lock().unwrap();
        assert_eq!(commands(ex.state()), commands(&journal_a));
        assert_eq!(ex.state().runs, journal_a.runs);
        assert_eq!(ex.state().next_id, journal_a.next_id);
    }
    b.reconcile().await.expect("B's pass");
    let calls = labels(&b).await;
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["w1"],
        "B re-issues A's command in flight, and not the one A could not journal"
    );
    let st = fake.state.lock().unwrap();
    let last = *journal_txns(&st).last().unwrap();
    assert_eq!(last.body[0]["KV"]["Session"], eb.lock().session().unwrap());
}

#[tokio::test]
async fn a_missing_journal_is_a_fresh_executor_and_an_undecodable_one_stops_the_daemon() {
    let fake = FakeAgent::start(None).await;
    let (mut ea, la, a) = daemon(&fake, "m1");
    ea.round().await.unwrap();
    assert!(la.is_leader());
    // Stale memory from an earlier lead is replaced by what Consul holds: nothing.
    replace_state(&a, with_label_in_flight(fresh_state(), 1, "w1"));
    a.resume().await.expect("no key: fresh");
    assert!(a.driver.lock().unwrap().state().inflight.is_empty());
    a.reconcile().await.expect("a pass");
    assert!(journaled(&fake.state.lock().unwrap()).is_some(), "written");
    assert!(labels(&a).await.is_empty());

    put(&fake, b"{not json");
    let (mut eb, lb, b) = daemon(&fake, "m2");
    ea.resign().await;
    eb.round().await.unwrap();
    assert!(lb.is_leader());
    let err = b.resume().await.expect_err("not an executor state");
    assert!(
        format!("{err:#}").contains("not an executor state"),
        "{err:#}"
    );
    assert!(b.journal.as_ref().unwrap().needs_load());
    let err = b
        .reconcile()
        .await
        .expect_err("no write before a good read");
    assert!(matches!(err, ReconcileError::Journal(_)), "{err}");
    assert_eq!(
        fake.state.lock().unwrap().kv[JOURNAL_KEY].value,
        b"{not json",
        "never overwritten"
    );
}

#[tokio::test]
async fn the_loop_reads_the_journal_when_it_takes_the_lead_before_it_acts() {
    let fake = FakeAgent::start(None).await;
    let (mut ea, la, a) = daemon(&fake, "m1");
    let seed = with_label_in_flight(fresh_state(), 7, "w7");
    put(&fake, &executor::driver::encode(&seed));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = a.clone().run(async move {
        let _ = stop_rx.await;
    });
    let test = async {
        assert!(labels(&a).await.is_empty(), "a standby starts nothing");
        assert!(fake.state.lock().unwrap().requests.is_empty());
        ea.round().await.unwrap();
        assert!(la.is_leader());
        let mut calls = Vec::new();
        for _ in 0..20 {
            calls = labels(&a).await;
            if !calls.is_empty() {
                break;
            }
        }
        assert_eq!(
            calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["w7"],
            "the journaled command in flight, issued again by the new leader"
        );
        let _ = stop_tx.send(());
    };
    tokio::join!(run, test);
    let st = fake.state.lock().unwrap();
    let read = st
        .requests
        .iter()
        .position(|r| r.method == "GET" && r.path == format!("/v1/kv/{JOURNAL_KEY}"))
        .expect("the journal was read");
    let written = st
        .requests
        .iter()
        .position(|r| r.path == "/v1/txn")
        .expect("and written");
    assert!(read < written);
}
