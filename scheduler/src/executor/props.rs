//! Property tests, through the [`Driver`] as `berth run` uses it: whatever the interleaving of
//! outcomes (done, refused, failed, in any order), node faults, journal writes that fail, and
//! restarts from the journal (with outcomes of the dead incarnation arriving late), a slot
//! never starts at a stale epoch, a stateful slot never starts while its old task still runs
//! elsewhere (the stop comes first), no command starts that the journal does not record, a
//! drain never has more slots of a service stopped at once than `berth.max-unavailable`, and
//! once the faults stop the executor goes idle.

use proptest::prelude::*;

use super::tests::{Backend, set_node, world};
use super::*;
use crate::model::{Availability, Cluster, NodeState};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];

#[derive(Clone, Debug)]
enum Op {
    Down(usize),
    Up(usize),
    Drain(usize),
    Activate(usize),
    /// Complete the n-th command in flight: 0 done (as the backend answers), 1 refused,
    /// 2 failed (neither performed).
    Deliver(usize, u8),
    /// The backend performs the n-th command, then the controller is killed before it hears
    /// back and resumes from its journal.
    CrashAfter(usize),
    /// The next journal write fails: nothing of its batch starts.
    JournalFails,
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..4usize).prop_map(Op::Down),
        1 => (0..4usize).prop_map(Op::Up),
        1 => (0..4usize).prop_map(Op::Drain),
        1 => (0..4usize).prop_map(Op::Activate),
        4 => (0..8usize, 0..3u8).prop_map(|(i, k)| Op::Deliver(i, k)),
        1 => (0..8usize).prop_map(Op::CrashAfter),
        1 => Just(Op::JournalFails),
        1 => (1..40_000u64).prop_map(Op::Tick),
    ]
}

struct Harness {
    c: Cluster,
    b: Backend,
    driver: Driver,
    now: u64,
    /// The journal as last written.
    disk: Option<Vec<u8>>,
    fail_next_write: bool,
    inflight: Vec<(Ticket, Command)>,
    /// Commands of incarnations that died, performed or not, whose outcome arrives late.
    late: Vec<(Ticket, Command)>,
}

impl Harness {
    fn new(c: Cluster) -> Harness {
        Harness {
            c,
            b: Backend::default(),
            driver: Driver::new(Config::default(), Timers::Polled, true),
            now: 0,
            disk: None,
            fail_next_write: false,
            inflight: Vec::new(),
            late: Vec::new(),
        }
    }

    /// Polls until nothing is ready, persisting each batch's state before its work starts;
    /// observes when the batch says so.
    fn pull(&mut self) {
        for _ in 0..50 {
            self.check_notices();
            let batch = self.driver.poll(self.now);
            if let Some(state) = &batch.journal {
                if std::mem::take(&mut self.fail_next_write) {
                    let observe = batch.observe;
                    self.driver.not_persisted(batch);
                    if observe {
                        self.observe();
                    }
                    return;
                }
                self.disk = Some(state.clone());
                self.driver.persisted();
            }
            let journal: Option<ExecutorState> = self
                .disk
                .as_ref()
                .map(|d| serde_json::from_slice(d).expect("the journal decodes"));
            let observe = batch.observe;
            let mut started = false;
            for job in batch.work {
                let Job::Command(ticket, cmd) = job else {
                    panic!("timers are polled: {job:?}")
                };
                let recorded = journal
                    .as_ref()
                    .and_then(|j| j.inflight.get(&ticket.id))
                    .is_some_and(|f| f.issued && f.command == cmd);
                assert!(recorded, "{cmd:?} starts before the journal records it");
                if let Command::StopSlot {
                    wait_ms: Some(ms), ..
                } = &cmd
                {
                    assert_eq!(*ms, Config::default().stop_wait_ms, "bounded by the lease");
                }
                self.inflight.push((ticket, cmd));
                started = true;
            }
            if observe {
                self.driver.observe(self.now, Observation::of(&self.c));
                continue;
            }
            if !started {
                return;
            }
        }
    }

    fn observe(&mut self) {
        self.driver.observe(self.now, Observation::of(&self.c));
        self.pull();
    }

    fn check_notices(&mut self) {
        for n in self.driver.take_notices() {
            assert!(
                !matches!(n, Notice::DrainBudget { .. }),
                "a drain exceeded berth.max-unavailable: {n:?}"
            );
        }
    }

    fn complete(&mut self, ticket: Ticket, out: Outcome) {
        if self.driver.complete(ticket, out, self.now) {
            self.observe();
        } else {
            self.pull();
        }
    }

    /// kill -9, then a new process resumes from the journal (or starts fresh without one).
    fn restart(&mut self) {
        let state: Option<ExecutorState> = self
            .disk
            .as_ref()
            .map(|d| serde_json::from_slice(d).expect("the journal decodes"));
        self.late.append(&mut self.inflight);
        self.driver.resume(state, Config::default(), self.now);
        self.observe();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Down(k) => {
                set_node(&mut self.c, WORKERS[k], |n| n.state = NodeState::Down);
                self.observe();
            }
            Op::Up(k) => {
                set_node(&mut self.c, WORKERS[k], |n| n.state = NodeState::Ready);
                self.observe();
            }
            Op::Drain(k) => {
                set_node(&mut self.c, WORKERS[k], |n| {
                    n.availability = Availability::Drain
                });
                self.observe();
            }
            Op::Activate(k) => {
                set_node(&mut self.c, WORKERS[k], |n| {
                    n.availability = Availability::Active
                });
                self.observe();
            }
            Op::Deliver(i, kind) => {
                // Now and then an outcome of a dead incarnation arrives: ignored.
                if kind == 0
                    && let Some((ticket, _)) = self.late.pop()
                {
                    assert!(!self.driver.is_awaited(ticket));
                    assert!(!self.driver.complete(ticket, Outcome::Done, self.now));
                }
                if self.inflight.is_empty() {
                    return;
                }
                let (ticket, cmd) = self.inflight.remove(i % self.inflight.len());
                let out = match kind {
                    0 => self.b.perform(&mut self.c, &cmd),
                    1 => Outcome::Refused {
                        current_epoch: None,
                        reason: "injected".into(),
                    },
                    _ => Outcome::Failed {
                        reason: "injected".into(),
                    },
                };
                self.complete(ticket, out);
            }
            Op::CrashAfter(i) => {
                if let Some((_, cmd)) = self.inflight.get(i % self.inflight.len().max(1)) {
                    let cmd = cmd.clone();
                    self.b.perform(&mut self.c, &cmd);
                }
                self.restart();
            }
            Op::JournalFails => self.fail_next_write = true,
            Op::Tick(ms) => {
                self.now += ms;
                self.pull();
            }
        }
    }

    /// Faults stopped: every node is up and active, every command succeeds.
    fn settle(&mut self) {
        self.fail_next_write = false;
        for w in WORKERS {
            set_node(&mut self.c, w, |n| {
                n.state = NodeState::Ready;
                n.availability = Availability::Active;
            });
        }
        self.observe();
        for _ in 0..500 {
            if let Some((ticket, cmd)) = self.inflight.first().cloned() {
                self.inflight.remove(0);
                let out = self.b.perform(&mut self.c, &cmd);
                self.complete(ticket, out);
                continue;
            }
            match self.driver.wake_at() {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.pull();
                }
                None => {
                    self.observe();
                    if self.inflight.is_empty() && self.driver.wake_at().is_none() {
                        break;
                    }
                }
            }
        }
        assert!(self.inflight.is_empty(), "still busy: {:?}", self.inflight);
        assert_eq!(self.driver.wake_at(), None);
        let exec = self.driver.executor();
        assert_eq!(exec.busy_slots().count(), 0, "slots left busy");
        assert!(exec.state().runs.is_empty(), "runs left open");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_is_safe_and_converges(ops in prop::collection::vec(op(), 0..40)) {
        let mut h = Harness::new(world());
        h.observe();
        for op in &ops {
            // `Backend::perform` asserts that a started slot's epoch is its volume's.
            h.apply(op);
        }
        h.settle();
    }
}
