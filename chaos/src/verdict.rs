//! The verdict of one run, from what its workload recorded — pure functions, so that the
//! harness that proves Berth's promises is itself proven by unit tests.
//!
//! The evidence is the workload's acknowledged-write history (what a client outside the
//! cluster was told is durable, and when it was told), what the copy the slot continues from
//! holds, every write found on any copy, and any problem met while collecting it. A problem —
//! an acknowledgement that cannot be read, a copy that cannot be read — fails the run: a
//! verdict built on evidence the harness could not read proves nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// What identifies the write in a copy (the writer: `SEQ TASK`).
    pub key: String,
    /// The task (one incarnation of the slot's program) that acknowledged it.
    pub task: String,
    /// When it was written, in Unix milliseconds of the writer's clock (the lab's one clock).
    pub written_ms: u128,
    /// When the acknowledgement reached the client outside the cluster.
    pub at: Instant,
}

/// A write found on some copy of the data (acknowledged or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub task: String,
    pub written_ms: u128,
}

/// What a run collected.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub acks: Vec<Ack>,
    /// The keys the copy the slot continues from holds, or why it could not be read.
    pub surviving: Result<BTreeSet<String>, String>,
    /// Every write found on any copy, for the overlap of writers (the acknowledged ones are
    /// counted too, whether or not their copy survived).
    pub writes: Vec<Write>,
    /// Evidence that could not be read (malformed acknowledgements, unreadable copies).
    pub problems: Vec<String>,
}

/// When the fault happened and when the evidence was taken.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub fault: Instant,
    /// The fault's instant on the writers' clock (Unix ms), to place their writes.
    pub fault_ms: u128,
    /// When the acknowledgements were taken (the end of the run).
    pub end: Instant,
}

/// Acknowledgements further apart than this are an outage (a writer acknowledges every
/// ~20 ms; a slow fsync on a busy machine stays well under it).
pub const GAP: Duration = Duration::from_secs(1);

/// The slot serves at the end of a run only if an acknowledgement arrived this close to it.
pub const END_WINDOW: Duration = Duration::from_secs(3);

/// Who served the slot again after the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServedBy {
    /// A task that had not written before the fault (a failover, a restart).
    NewTask,
    /// The task that ran before the fault, after its first outage (or without one).
    SameTask,
}

/// One task's writes, relative to the fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSpan {
    pub task: String,
    /// Its first and last write, seconds from the fault (negative: before it).
    pub from_s: f64,
    pub to_s: f64,
    pub writes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Fault → the slot serving again: the first acknowledgement of a new task if one took
    /// over, else the first acknowledgement after the old task's first outage (0 if it never
    /// stopped). `None` when nothing served at the end of the run.
    pub seconds_to_serve: Option<f64>,
    pub served_by: Option<ServedBy>,
    /// Distinct acknowledged writes.
    pub acked: usize,
    /// Acknowledged writes the surviving copy does not hold (all of them if it is unreadable).
    pub lost_acked: usize,
    /// A few lost keys, to look for in the logs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_examples: Vec<String>,
    /// Pairs of tasks whose writes overlap in time: two writers at once.
    pub double_writers: usize,
    /// The longest such overlap, seconds.
    pub overlap_seconds: f64,
    /// How many tasks wrote, and each one's writes, by first write.
    pub writers: usize,
    pub tasks: Vec<TaskSpan>,
    /// The longest time without an acknowledgement from the fault to the end.
    pub max_gap_seconds: f64,
    /// The time without acknowledgements from the fault to the end, counting gaps over
    /// [`GAP`] (several outages in a flapping link add up).
    pub down_seconds: f64,
    /// Evidence that could not be read; any fails the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Verdict {
    /// Nothing lost, one writer at a time, serving at the end, all evidence read.
    pub fn safe_and_serving(&self) -> bool {
        self.seconds_to_serve.is_some()
            && self.lost_acked == 0
            && self.double_writers == 0
            && self.problems.is_empty()
    }
}

pub fn judge(e: &Evidence, w: Window) -> Verdict {
    let (lost, lost_examples) = lost(&e.acks, &e.surviving);
    let mut writes = e.writes.clone();
    writes.extend(e.acks.iter().map(|a| Write {
        task: a.task.clone(),
        written_ms: a.written_ms,
    }));
    let spans = spans(&writes);
    let (double_writers, overlap_ms) = overlapping_writers(&spans);
    let mut problems = e.problems.clone();
    if let Err(why) = &e.surviving {
        problems.push(format!(
            "the surviving copy could not be read, so no acknowledged write is confirmed (all \
             are counted lost): {why}"
        ));
    }
    let served = seconds_to_serve(&e.acks, w);
    let (max_gap, down) = gaps(&e.acks, w);
    let mut tasks: Vec<TaskSpan> = spans
        .iter()
        .map(|(task, s)| TaskSpan {
            task: task.to_string(),
            from_s: rel(s.first, w.fault_ms),
            to_s: rel(s.last, w.fault_ms),
            writes: s.writes,
        })
        .collect();
    tasks.sort_by(|a, b| a.from_s.total_cmp(&b.from_s).then(a.task.cmp(&b.task)));
    Verdict {
        seconds_to_serve: served.map(|(s, _)| s),
        served_by: served.map(|(_, b)| b),
        acked: e.acks.iter().map(|a| &a.key).collect::<BTreeSet<_>>().len(),
        lost_acked: lost,
        lost_examples,
        double_writers,
        overlap_seconds: overlap_ms as f64 / 1000.0,
        writers: tasks.len(),
        tasks,
        max_gap_seconds: max_gap.as_secs_f64(),
        down_seconds: down.as_secs_f64(),
        problems,
    }
}

fn rel(ms: u128, fault_ms: u128) -> f64 {
    (ms as f64 - fault_ms as f64) / 1000.0
}

/// Distinct acknowledged keys the surviving copy lacks, and the first few of them. An
/// unreadable copy confirms nothing: every acknowledged write counts as lost.
pub fn lost(acks: &[Ack], surviving: &Result<BTreeSet<String>, String>) -> (usize, Vec<String>) {
    let acked: BTreeSet<&String> = acks.iter().map(|a| &a.key).collect();
    let missing: Vec<&String> = match surviving {
        Ok(kept) => acked.into_iter().filter(|k| !kept.contains(*k)).collect(),
        Err(_) => acked.into_iter().collect(),
    };
    let examples = missing.iter().take(5).map(|k| k.to_string()).collect();
    (missing.len(), examples)
}

/// How long before the fault the oldest lost acknowledged write was acknowledged, ms (0 if it
/// was after the fault); `None` if nothing was lost or the surviving copy could not be read.
/// What `replicated` may lose is bounded by the promoted standby's lag: every lost write must
/// fall within it.
pub fn lost_window_ms(
    acks: &[Ack],
    surviving: &Result<BTreeSet<String>, String>,
    fault_ms: u128,
) -> Option<u64> {
    let kept = surviving.as_ref().ok()?;
    acks.iter()
        .filter(|a| !kept.contains(&a.key))
        .map(|a| fault_ms.saturating_sub(a.written_ms) as u64)
        .max()
}

/// One task's first and last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u128,
    pub last: u128,
    pub writes: usize,
}

/// Each task's span of writes; a write seen more than once (acknowledged and on a copy, or on
/// two copies) counts once.
pub fn spans(writes: &[Write]) -> BTreeMap<&str, Span> {
    let distinct: BTreeSet<(&str, u128)> = writes
        .iter()
        .map(|w| (w.task.as_str(), w.written_ms))
        .collect();
    let mut span: BTreeMap<&str, Span> = BTreeMap::new();
    for (task, ms) in distinct {
        let s = span.entry(task).or_insert(Span {
            first: ms,
            last: ms,
            writes: 0,
        });
        s.first = s.first.min(ms);
        s.last = s.last.max(ms);
        s.writes += 1;
    }
    span
}

/// Pairs of tasks whose spans of writes overlap (a task that wrote, stopped, and wrote again
/// after another took over overlaps it), and the longest overlap in ms. Spans that only touch
/// (one ends in the millisecond the next begins) do not overlap.
pub fn overlapping_writers(spans: &BTreeMap<&str, Span>) -> (usize, u128) {
    let s: Vec<&Span> = spans.values().collect();
    let (mut pairs, mut longest) = (0, 0);
    for i in 0..s.len() {
        for j in i + 1..s.len() {
            if s[i].first < s[j].last && s[j].first < s[i].last {
                pairs += 1;
                longest = longest.max(s[i].last.min(s[j].last) - s[i].first.max(s[j].first));
            }
        }
    }
    (pairs, longest)
}

/// When the slot served again, and who served it (see [`Verdict::seconds_to_serve`]).
pub fn seconds_to_serve(acks: &[Ack], w: Window) -> Option<(f64, ServedBy)> {
    let last = acks.iter().map(|a| a.at).filter(|at| *at <= w.end).max()?;
    if w.end.saturating_duration_since(last) > END_WINDOW {
        return None; // not serving at the end
    }
    let before: BTreeSet<&str> = acks
        .iter()
        .filter(|a| a.at < w.fault)
        .map(|a| a.task.as_str())
        .collect();
    let since = |at: Instant| at.saturating_duration_since(w.fault).as_secs_f64();
    let first_new = acks
        .iter()
        .filter(|a| a.at >= w.fault && !before.contains(a.task.as_str()))
        .map(|a| a.at)
        .min();
    if let Some(at) = first_new {
        return Some((since(at), ServedBy::NewTask));
    }
    let mut prev = acks
        .iter()
        .map(|a| a.at)
        .filter(|at| *at < w.fault)
        .max()
        .unwrap_or(w.fault);
    for at in arrivals(acks, w) {
        if at.saturating_duration_since(prev) > GAP {
            return Some((since(at), ServedBy::SameTask));
        }
        prev = at;
    }
    Some((0.0, ServedBy::SameTask))
}

fn arrivals(acks: &[Ack], w: Window) -> Vec<Instant> {
    let mut at: Vec<Instant> = acks
        .iter()
        .map(|a| a.at)
        .filter(|at| *at >= w.fault && *at <= w.end)
        .collect();
    at.sort();
    at
}

/// The longest time without an acknowledgement between the fault and the end, and the sum
/// of such times over [`GAP`].
pub fn gaps(acks: &[Ack], w: Window) -> (Duration, Duration) {
    let mut points = vec![w.fault];
    points.extend(arrivals(acks, w));
    points.push(w.end);
    let (mut longest, mut down) = (Duration::ZERO, Duration::ZERO);
    for p in points.windows(2) {
        let gap = p[1].saturating_duration_since(p[0]);
        longest = longest.max(gap);
        if gap > GAP {
            down += gap;
        }
    }
    (longest, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// Task `task` acknowledging one write every `every` ms in [from, to) (ms after `base`,
    /// written and received at the same ms), keys `SEQ TASK`.
    fn writes(base: Instant, task: &str, from: u64, to: u64, every: u64) -> Vec<Ack> {
        (from..to)
            .step_by(every as usize)
            .enumerate()
            .map(|(i, ms)| Ack {
                key: format!("{} {task}", i + 1),
                task: task.into(),
                written_ms: 1_000_000 + ms as u128,
                at: t(base, ms),
            })
            .collect()
    }

    fn window(base: Instant, fault: u64, end: u64) -> Window {
        Window {
            fault: t(base, fault),
            fault_ms: 1_000_000 + fault as u128,
            end: t(base, end),
        }
    }

    fn keys(acks: &[Ack]) -> BTreeSet<String> {
        acks.iter().map(|a| a.key.clone()).collect()
    }

    fn evidence(acks: Vec<Ack>, surviving: Result<BTreeSet<String>, String>) -> Evidence {
        Evidence {
            acks,
            surviving,
            writes: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn span(first: u128, last: u128) -> Span {
        Span {
            first,
            last,
            writes: 2,
        }
    }

    #[test]
    fn a_write_seen_twice_counts_once() {
        let w = |task: &str, ms| Write {
            task: task.into(),
            written_ms: ms,
        };
        let all = [w("a", 10), w("a", 30), w("a", 10), w("b", 40)];
        let s = spans(&all);
        assert_eq!(
            s["a"],
            Span {
                first: 10,
                last: 30,
                writes: 2
            }
        );
        assert_eq!(s["b"].writes, 1);
    }

    #[test]
    fn sequential_writers_do_not_overlap() {
        let s = BTreeMap::from([
            ("a", span(0, 100)),
            ("b", span(101, 200)),
            ("c", span(300, 400)),
        ]);
        assert_eq!(overlapping_writers(&s), (0, 0));
        // Touching in one millisecond is a handover, not two writers.
        let s = BTreeMap::from([("a", span(0, 100)), ("b", span(100, 200))]);
        assert_eq!(overlapping_writers(&s), (0, 0));
    }

    #[test]
    fn overlapping_writers_are_counted_in_pairs_with_the_longest_overlap() {
        let s = BTreeMap::from([("a", span(0, 100)), ("b", span(60, 200))]);
        assert_eq!(overlapping_writers(&s), (1, 40));
        // Three at once: three pairs; c lies inside b.
        let s = BTreeMap::from([
            ("a", span(0, 100)),
            ("b", span(50, 300)),
            ("c", span(90, 250)),
        ]);
        assert_eq!(overlapping_writers(&s), (3, 160));
    }

    #[test]
    fn a_frozen_writer_that_writes_after_the_new_one_began_overlaps_it() {
        // `old` writes until 1 s, is frozen, and writes once more at 16 s, after `new` took
        // over at 8 s: the pattern a node freeze makes.
        let base = Instant::now();
        let mut acks = writes(base, "old", 0, 1000, 20);
        acks.extend(writes(base, "new", 8000, 20000, 20));
        let e = Evidence {
            writes: vec![Write {
                task: "old".into(),
                written_ms: 1_016_000,
            }],
            ..evidence(acks.clone(), Ok(keys(&acks)))
        };
        let v = judge(&e, window(base, 1000, 20000));
        assert_eq!(v.double_writers, 1);
        assert_eq!(v.overlap_seconds, 8.0);
        assert!(!v.safe_and_serving());
        assert_eq!(
            v.tasks.iter().map(|t| t.task.as_str()).collect::<Vec<_>>(),
            ["old", "new"]
        );
        assert_eq!(v.tasks[0].to_s, 15.0);
    }

    #[test]
    fn a_clean_failover_is_safe_and_serves_from_the_new_tasks_first_acknowledgement() {
        let base = Instant::now();
        let mut acks = writes(base, "old", 0, 2000, 20);
        acks.extend(writes(base, "new", 9500, 15000, 20));
        let e = evidence(acks.clone(), Ok(keys(&acks)));
        let v = judge(&e, window(base, 2000, 15000));
        assert_eq!(v.seconds_to_serve, Some(7.5));
        assert_eq!(v.served_by, Some(ServedBy::NewTask));
        assert_eq!(v.double_writers, 0);
        assert_eq!(v.lost_acked, 0);
        assert_eq!(v.acked, acks.len());
        assert_eq!(v.writers, 2);
        assert!(v.safe_and_serving(), "{v:?}");
    }

    #[test]
    fn lost_counts_exactly_the_distinct_acknowledged_keys_missing_from_the_surviving_copy() {
        let base = Instant::now();
        let acks = writes(base, "a", 0, 100, 10); // keys "1 a" .. "10 a"
        let mut kept = keys(&acks);
        kept.remove("3 a");
        kept.remove("10 a");
        kept.insert("11 a".into()); // written, never acknowledged: not our business
        let mut twice = acks.clone();
        twice.push(acks[2].clone()); // the same acknowledgement received twice
        let (n, ex) = lost(&twice, &Ok(kept.clone()));
        assert_eq!((n, ex), (2, vec!["10 a".to_string(), "3 a".to_string()]));
        let v = judge(&evidence(twice, Ok(kept)), window(base, 50, 100));
        assert_eq!((v.acked, v.lost_acked), (10, 2));
        assert!(!v.safe_and_serving());
        // A copy started again from empty by a new task holds none of the old keys.
        assert_eq!(lost(&acks, &Ok(BTreeSet::new())).0, 10);
    }

    #[test]
    fn the_lost_window_reaches_back_to_the_oldest_lost_write() {
        let base = Instant::now();
        let acks = vec![
            Ack {
                key: "1".into(),
                task: "a".into(),
                written_ms: 1000,
                at: base,
            },
            Ack {
                key: "2".into(),
                task: "a".into(),
                written_ms: 1700,
                at: base,
            },
            Ack {
                key: "3".into(),
                task: "a".into(),
                written_ms: 1900,
                at: base,
            },
        ];
        let kept = |k: &[&str]| Ok(k.iter().map(|s| s.to_string()).collect());
        assert_eq!(lost_window_ms(&acks, &kept(&["1"]), 2000), Some(300));
        assert_eq!(lost_window_ms(&acks, &kept(&["1", "2", "3"]), 2000), None);
        // A write acknowledged after the fault (a clock's edge) is 0 ms before it.
        assert_eq!(lost_window_ms(&acks, &kept(&["1", "2"]), 1800), Some(0));
        assert_eq!(lost_window_ms(&acks, &Err("gone".into()), 2000), None);
    }

    #[test]
    fn an_unreadable_surviving_copy_fails_the_run_and_confirms_nothing() {
        let base = Instant::now();
        let acks = writes(base, "a", 0, 1000, 20);
        let e = evidence(acks.clone(), Err("docker exec: no such container".into()));
        let v = judge(&e, window(base, 500, 1000));
        assert_eq!(v.lost_acked, acks.len());
        assert_eq!(v.problems.len(), 1);
        assert!(
            v.problems[0].contains("no such container"),
            "{:?}",
            v.problems
        );
        assert!(!v.safe_and_serving());
    }

    #[test]
    fn any_problem_with_the_evidence_fails_the_run() {
        let base = Instant::now();
        let acks = writes(base, "a", 0, 1000, 20);
        let mut e = evidence(acks.clone(), Ok(keys(&acks)));
        assert!(judge(&e, window(base, 500, 1000)).safe_and_serving());
        e.problems.push("malformed acknowledgement: \"x 1\"".into());
        let v = judge(&e, window(base, 500, 1000));
        assert!(!v.safe_and_serving());
        assert_eq!(v.problems, e.problems);
    }

    #[test]
    fn a_slot_whose_writer_died_and_nothing_replaced_never_served() {
        let base = Instant::now();
        // Acknowledgements of writes from before the kill may still arrive just after it.
        let acks = writes(base, "old", 0, 2030, 20);
        let w = window(base, 2000, 30000);
        assert_eq!(seconds_to_serve(&acks, w), None);
        let v = judge(&evidence(acks.clone(), Ok(keys(&acks))), w);
        assert!(!v.safe_and_serving());
        assert!(v.max_gap_seconds > 27.9, "{v:?}");
        // A new task that served and then stopped long before the end does not serve either.
        let mut acks = acks;
        acks.extend(writes(base, "new", 9000, 10000, 20));
        assert_eq!(seconds_to_serve(&acks, w), None);
    }

    #[test]
    fn the_same_task_serves_again_after_its_first_outage_or_never_stopped() {
        let base = Instant::now();
        // A link cut for 3 s at 2 s: acknowledgements resume at 5.4 s (retransmission).
        let mut acks = writes(base, "a", 0, 2000, 20);
        acks.extend(writes(base, "a", 5400, 8000, 20));
        let w = window(base, 2000, 8000);
        let (s, by) = seconds_to_serve(&acks, w).expect("serves");
        assert_eq!(by, ServedBy::SameTask);
        assert!((s - 3.4).abs() < 1e-9, "{s}");
        // A fault the writer never noticed.
        let acks = writes(base, "a", 0, 8000, 20);
        assert_eq!(seconds_to_serve(&acks, w), Some((0.0, ServedBy::SameTask)));
    }

    #[test]
    fn outages_add_up_and_the_longest_is_kept() {
        let base = Instant::now();
        // Fault at 1 s; down 1.0–4.0, up, down 6.0–9.5, up to the end at 12 s.
        let mut acks = writes(base, "a", 0, 1000, 20);
        acks.extend(writes(base, "a", 4000, 6000, 20));
        acks.extend(writes(base, "a", 9500, 12000, 20));
        let (longest, down) = gaps(&acks, window(base, 1000, 12000));
        assert_eq!(longest, Duration::from_millis(3520));
        assert_eq!(down, Duration::from_millis(3000 + 3520));
    }
}
