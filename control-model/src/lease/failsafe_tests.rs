use super::*;

const L: u64 = 5_000;
const STEP: u64 = 10;

/// One agent: its keeper, its clock (rate in parts per million off real time, and an offset),
/// the dataset it serves and the period its mount was claimed in, and the instant (real) from
/// which a newly claimed mount may serve writes.
struct Node {
    keeper: Keeper,
    ppm: i64,
    offset: u64,
    holds: Option<usize>,
    validated: u64,
    serves_from: u64,
}

impl Node {
    fn local(&self, t: u64) -> Duration {
        let drift = (t as i64 * self.ppm) / 1_000_000;
        Duration::from_millis((self.offset as i64 + t as i64 + drift) as u64)
    }
}

/// What can reach what at real instant `t`.
struct Net {
    control_up: Box<dyn Fn(u64) -> bool>,
    /// Whether node `i` reaches the control service at `t` (when it is up).
    reaches_control: Box<dyn Fn(u64, usize) -> bool>,
    /// Whether nodes `i` and `j` reach each other at `t`.
    link: Box<dyn Fn(u64, usize, usize) -> bool>,
}

struct Outcome {
    /// Per node, the real instants its writes were admitted at.
    writes: Vec<Vec<u64>>,
    /// Per dataset, who held it at the end (the control service's view).
    holder: Vec<usize>,
    /// Real instants at which two nodes were admitted on one dataset.
    two_writers: Vec<u64>,
    /// When each dataset was handed to another node (real).
    handed: Vec<Option<u64>>,
}

fn timing() -> AgentTiming {
    AgentTiming::default()
}

/// Runs `n` agents for `end` ms of real time with failsafe `on`, the last of them free and
/// the others each holding its own dataset; heartbeats and rounds every interval, writes tried
/// every 10 ms.
fn run(n: usize, end: u64, on: bool, net: &Net) -> Outcome {
    let datasets = n - 1;
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let failsafe = if on {
                Failsafe::On {
                    started: Duration::ZERO,
                }
            } else {
                Failsafe::Off
            };
            Node {
                keeper: Keeper::with_failsafe(timing(), failsafe),
                // Clocks within ±600 ppm of real time, NTP's worst plus quartz.
                ppm: [-600, 600, 0, 300, -300][i % 5],
                offset: 1_000 * i as u64,
                holds: (i < datasets).then_some(i),
                validated: 0,
                serves_from: 0,
            }
        })
        .collect();
    // The control service: each node's lease end and each dataset's holder, on real time
    // (its own clock). It knows every node leased for one lease from the start.
    let mut lease_end: Vec<u64> = vec![L; n];
    let mut holder: Vec<usize> = (0..datasets).collect();
    let mut handed = vec![None; datasets];
    let mut out = Outcome {
        writes: vec![Vec::new(); n],
        holder: Vec::new(),
        two_writers: Vec::new(),
        handed: Vec::new(),
    };
    let interval = timing().interval.as_millis() as u64;
    // Start every node with a lease and its mount claimed.
    for nd in nodes.iter_mut() {
        let at = nd.local(0);
        assert_eq!(
            nd.keeper.renewed(at, at, reply(n as u64)),
            Renewal::NewPeriod(1)
        );
        nd.validated = 1;
    }
    let mut t = 0;
    while t < end {
        if t % interval == 0 && t > 0 {
            let up = (net.control_up)(t);
            for i in 0..n {
                let sent = nodes[i].local(t);
                if up && (net.reaches_control)(t, i) {
                    lease_end[i] = t + L;
                    let r = nodes[i]
                        .keeper
                        .renewed(sent, nodes[i].local(t + 5), reply(n as u64));
                    if let Renewal::NewPeriod(p) = r {
                        // Claimed again at its epoch: granted only if it still holds it.
                        match nodes[i].holds {
                            Some(d) if holder[d] == i => nodes[i].validated = p,
                            _ => nodes[i].holds = None,
                        }
                    }
                } else {
                    nodes[i].keeper.unreached();
                }
            }
            // Rounds, after every heartbeat of this interval.
            for i in 0..n {
                if !nodes[i].keeper.wants_failsafe(nodes[i].local(t + 20)) {
                    continue;
                }
                let sent = nodes[i].local(t + 20);
                let votes: Vec<Vote> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        if (net.link)(t + 20, i, j) {
                            nodes[j].keeper.vote(nodes[j].local(t + 25))
                        } else {
                            Vote::Off
                        }
                    })
                    .collect();
                nodes[i]
                    .keeper
                    .failsafe_round(sent, nodes[i].local(t + 30), &votes);
            }
            // The control service hands a dataset whose holder's lease ended to the first
            // node it hears from, which claims it at once.
            if up {
                for d in 0..datasets {
                    let x = holder[d];
                    if t < lease_end[x] {
                        continue;
                    }
                    // One dataset per node in this model: only a free node takes one.
                    let Some(y) =
                        (0..n).find(|&y| y != x && t < lease_end[y] && nodes[y].holds.is_none())
                    else {
                        continue;
                    };
                    holder[d] = y;
                    handed[d] = Some(t);
                    let now = nodes[y].local(t);
                    nodes[y].holds = Some(d);
                    nodes[y].validated = nodes[y].keeper.period();
                    nodes[y].serves_from =
                        t + nodes[y].keeper.failsafe_hold(now).as_millis() as u64;
                }
            }
        }
        let mut writers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, nd) in nodes.iter().enumerate() {
            let Some(d) = nd.holds else { continue };
            if t < nd.serves_from {
                continue;
            }
            if nd.keeper.admit(nd.local(t), nd.validated) == Admit::Go {
                out.writes[i].push(t);
                writers[d].push(i);
            }
        }
        if writers.iter().any(|w| w.len() > 1) {
            out.two_writers.push(t);
        }
        t += STEP;
    }
    out.holder = holder;
    out.handed = handed;
    out
}

fn wrote_throughout(w: &[u64], from: u64, to: u64) -> bool {
    (from..to)
        .step_by(STEP as usize)
        .all(|t| w.binary_search(&t).is_ok())
}

fn last_write(w: &[u64]) -> u64 {
    w.last().copied().unwrap_or(0)
}

/// The control service down 60 s and nothing else: with failsafe every agent writes all along
/// and nothing changes hands; without it, every agent holds its writes from one lease in.
#[test]
fn control_down_for_a_minute_stops_no_write_with_failsafe() {
    let net = Net {
        control_up: Box::new(|t| !(10_000..70_000).contains(&t)),
        reaches_control: Box::new(|_, _| true),
        link: Box::new(|_, _, _| true),
    };
    let on = run(4, 90_000, true, &net);
    for w in &on.writes[..3] {
        assert!(wrote_throughout(w, 0, 90_000), "a write held");
    }
    assert!(on.two_writers.is_empty());
    assert_eq!(on.holder, vec![0, 1, 2], "nothing changed hands");
    let off = run(4, 90_000, false, &net);
    for w in &off.writes[..3] {
        assert!(
            !wrote_throughout(w, 0, 90_000),
            "without failsafe writes wait"
        );
        assert!(
            wrote_throughout(w, 71_000, 90_000),
            "and go on once it answers"
        );
    }
}

/// The control service down and one worker cut off from everyone 20 s in: that worker's
/// writes stop within one lease of its last round, and nothing is handed elsewhere before
/// they did (the control service is down until 70 s); when it returns the worker is still
/// cut off, its dataset moves, and still only one node writes at a time.
#[test]
fn a_worker_partitioned_during_the_outage_stops_within_the_lease() {
    let cut = |t: u64, i: usize| t >= 20_000 && i == 2;
    let net = Net {
        control_up: Box::new(|t| !(10_000..70_000).contains(&t)),
        reaches_control: Box::new(move |t, i| !cut(t, i)),
        link: Box::new(move |t, i, j| !cut(t, i) && !cut(t, j)),
    };
    // A fourth, free node takes the dataset once its holder's lease ended.
    let o = run(4, 100_000, true, &net);
    let w2 = &o.writes[2];
    assert!(
        last_write(w2) < 20_000 + L,
        "stopped within one lease: {}",
        last_write(w2)
    );
    assert!(last_write(w2) >= 19_000, "it wrote until the partition");
    assert!(
        o.two_writers.is_empty(),
        "two writers at {:?}",
        o.two_writers
    );
    let h = o.handed[2].expect("moved once the control service was back");
    assert!(h >= 70_000, "nothing is handed while it is down");
    assert!(h > last_write(w2));
}

/// The control service returns for everyone but one agent: the others' votes turn
/// `Reachable`, so that agent's failsafe ends within one lease; its dataset is handed to a
/// peer, which serves it only once the promise of its last vote ran out.
#[test]
fn control_back_for_all_but_one_agent_ends_its_failsafe_before_anyone_takes_over() {
    let net = Net {
        control_up: Box::new(|t| !(10_000..40_000).contains(&t)),
        reaches_control: Box::new(|t, i| !(i == 0 && t >= 10_000)),
        link: Box::new(|_, _, _| true),
    };
    let o = run(4, 80_000, true, &net);
    let w0 = &o.writes[0];
    assert!(
        wrote_throughout(w0, 0, 40_000),
        "failsafe while down for all"
    );
    assert!(last_write(w0) < 41_000 + L, "{}", last_write(w0));
    assert!(
        o.two_writers.is_empty(),
        "two writers at {:?}",
        o.two_writers
    );
    assert_eq!(o.holder[0], 3, "handed to the free node");
    let taken = o.writes[3].first().copied().expect("the new holder writes");
    assert!(taken > last_write(w0), "{taken} after {}", last_write(w0));
}

/// Outages and partitions at pseudo-random instants (a fixed seed): never two writers.
#[test]
fn never_two_writers_under_random_outages_and_partitions() {
    let mut seed: u64 = 0x5eed;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let mut moved = 0;
    for _ in 0..40 {
        let down_at = 5_000 + next(10_000);
        let down_for = 1_000 + next(30_000);
        let cut_node = next(4) as usize;
        let cut_at = next(50_000);
        let cut_for = next(20_000);
        let deaf = next(4) as usize;
        let deaf_until = down_at + down_for + next(15_000);
        let cut = move |t: u64, i: usize| i == cut_node && (cut_at..cut_at + cut_for).contains(&t);
        let net = Net {
            control_up: Box::new(move |t| !(down_at..down_at + down_for).contains(&t)),
            reaches_control: Box::new(move |t, i| {
                let deafened = i == deaf && (down_at..deaf_until).contains(&t);
                !(cut(t, i) || deafened)
            }),
            link: Box::new(move |t, i, j| !cut(t, i) && !cut(t, j)),
        };
        let o = run(4, 70_000, true, &net);
        moved += o.handed.iter().flatten().count();
        assert!(
            o.two_writers.is_empty(),
            "down {down_at}+{down_for}, cut {cut_node} {cut_at}+{cut_for}, deaf {deaf} to {deaf_until}: two writers at {:?}",
            &o.two_writers[..o.two_writers.len().min(5)]
        );
    }
    assert!(moved >= 10, "the runs hand datasets over: {moved}");
}

#[test]
fn a_vote_is_a_promise_and_a_grant_after_failsafe_starts_a_new_period() {
    let n = 3;
    let k = failsafe_keeper();
    assert_eq!(k.vote(ms(0)), Vote::Reachable, "no heartbeat has failed");
    k.renewed(ms(0), ms(5), reply(n as u64));
    assert_eq!(
        k.failsafe_hold(ms(1_000)),
        ms(4_000),
        "one lease after its start"
    );
    k.unreached();
    assert_eq!(k.vote(ms(6_000)), Vote::Unreachable);
    assert_eq!(k.failsafe_hold(ms(6_000)), ms(L), "promised for one lease");
    assert!(k.wants_failsafe(ms(1_000)));
    assert!(
        !k.failsafe_round(ms(1_000), ms(1_010), &[Vote::Unreachable, Vote::Reachable]),
        "one peer reaches the control service"
    );
    assert!(!k.failsafe_round(ms(1_000), ms(1_010), &[Vote::Unreachable, Vote::Off]));
    assert!(
        !k.failsafe_round(ms(1_000), ms(1_010), &[Vote::Unreachable]),
        "three nodes registered at the last grant, only one peer asked: a stale list"
    );
    assert!(k.failsafe_round(ms(1_000), ms(1_010), &[Vote::Unreachable; 2]));
    assert!(k.in_failsafe(ms(5_000)));
    assert_eq!(
        k.left(ms(5_000)),
        ms(500),
        "one lease from the round less the margin"
    );
    // Answered while the gate is open, but the gate is failsafe's: a new period.
    assert_eq!(
        k.renewed(ms(5_000), ms(5_010), reply(n as u64)),
        Renewal::NewPeriod(2)
    );
    assert!(!k.in_failsafe(ms(5_010)));
    assert_eq!(k.vote(ms(5_020)), Vote::Reachable);
}

#[test]
fn failsafe_never_revives_a_closed_gate_and_is_off_by_default() {
    let n = 2;
    let k = failsafe_keeper();
    k.renewed(ms(0), ms(5), reply(n as u64));
    k.unreached();
    assert!(!k.wants_failsafe(ms(4_500)), "the gate closed");
    assert!(!k.failsafe_round(ms(4_400), ms(4_600), &[Vote::Unreachable]));
    assert!(matches!(k.admit(ms(4_600), 1), Admit::Wait(_)));

    let off = Keeper::new(timing());
    off.renewed(ms(0), ms(5), reply(n as u64));
    off.unreached();
    assert_eq!(off.vote(ms(10)), Vote::Off);
    assert!(!off.wants_failsafe(ms(10)));
    assert!(!off.failsafe_round(ms(10), ms(20), &[]));
    assert_eq!(off.failsafe_hold(ms(10)), Duration::ZERO);

    // A control service that does not say how many nodes are registered: no failsafe.
    let k = failsafe_keeper();
    k.renewed(ms(0), ms(5), reply(0));
    k.unreached();
    assert!(!k.failsafe_round(ms(10), ms(20), &[Vote::Unreachable]));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A lease of `L` from the control service, which counts `nodes` registered.
fn reply(nodes: u64) -> HeartbeatReply {
    HeartbeatReply {
        lease_ms: L,
        dead: false,
        nodes,
    }
}

/// An agent with failsafe on since its start.
fn failsafe_keeper() -> Keeper {
    Keeper::with_failsafe(
        timing(),
        Failsafe::On {
            started: Duration::ZERO,
        },
    )
}
