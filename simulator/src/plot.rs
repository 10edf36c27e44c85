//! The SVG timeline (`--plot`): per node, up/down/cut-off/drained bands; per policy and
//! service, which node each slot ran on, outages in red, failover markers, the gaps in which a
//! slot waited for its node (hatched), and per run and service what the report counts against
//! the policy: acknowledged writes lost and starts on an empty volume.
//!
//! Written by hand rather than with a plotting crate: it is rectangles and text, and integer
//! coordinates with no font metrics are what makes the same run give the same bytes on every
//! machine.

use std::fmt::Write as _;

use crate::clock::{Ms, fmt_ms};
use crate::report::Report;
use crate::scenario::Scenario;
use crate::sim::NodeMark;

const W: u64 = 1400;
const LEFT: u64 = 190;
const RIGHT: u64 = 30;
const ROW: u64 = 16;
const MAX_NODE_ROWS: usize = 40;
const MAX_SLOT_ROWS: usize = 40;
/// Slot colours (by node), with the colour of the node's name written on them. Blues, cyans
/// and violets only — none is a node state's green, red, orange or grey, nor the outage red or
/// the double-writer purple, so a slot bar never reads as a node event — told apart by
/// lightness as much as by hue: neighbours in the list differ in both, so the nodes that ran
/// tasks (which take the colours in order) stay distinguishable, and the legend names each.
const PALETTE: [(&str, &str); 8] = [
    ("#1f77b4", "#fff"), // blue
    ("#9ecae1", "#000"), // pale blue
    ("#7b4fc9", "#fff"), // violet
    ("#17becf", "#000"), // cyan
    ("#0b2e59", "#fff"), // navy
    ("#c4b5f4", "#000"), // lavender
    ("#00838f", "#fff"), // dark cyan
    ("#3949ab", "#fff"), // indigo
];
/// A slot waiting for its node (its data is there): hatched, in the cut-off orange's family
/// but paler, under the slot's row.
const WAIT: &str = "#f7d9a8";
/// Outages and double writers last seconds in runs of hours: below this width (px) they would
/// vanish, and they are what the plot is for.
const MIN_MARK: u64 = 3;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Scale {
    end: Ms,
}

impl Scale {
    fn x(&self, t: Ms) -> u64 {
        LEFT + (t.min(self.end) as u128 * (W - LEFT - RIGHT) as u128 / self.end.max(1) as u128)
            as u64
    }
}

/// `0`, `90s`, `10m`, `1h30m`: short enough for an axis.
fn axis_label(t: Ms) -> String {
    let (h, m, s) = (t / 3_600_000, t % 3_600_000 / 60_000, t % 60_000 / 1_000);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

pub fn svg(scn: &Scenario, r: &Report) -> String {
    let end = r.duration_ms.max(1);
    let sc = Scale { end };
    let names = scn.node_names();
    let mut body = String::new();
    let mut y: u64 = 54;

    // Which nodes to draw: those with events first, then those that ever ran a task.
    let first = r.runs.first();
    let mut interesting: Vec<u32> = Vec::new();
    if let Some(run) = first {
        for (_, n, _) in &run.timeline.node_log {
            if !interesting.contains(n) {
                interesting.push(*n);
            }
        }
        for run in &r.runs {
            for (_, _, n, _, _) in &run.timeline.tasks {
                if !interesting.contains(n) {
                    interesting.push(*n);
                }
            }
        }
    }
    let mut ran: Vec<u32> = r
        .runs
        .iter()
        .flat_map(|run| run.timeline.tasks.iter().map(|t| t.2))
        .collect();
    ran.sort_unstable();
    ran.dedup();
    let colour = |node: u32| PALETTE[ran.binary_search(&node).unwrap_or(0) % PALETTE.len()];
    // Down or cut off, per node: (from, to), to read which gaps a slot spent waiting.
    let mut away: Vec<(u32, Ms, Ms)> = Vec::new();
    if let Some(run) = first {
        let mut open: Vec<(u32, NodeMark, Ms)> = Vec::new();
        for &(t, n, mark) in &run.timeline.node_log {
            match mark {
                NodeMark::Down | NodeMark::CutOff => open.push((n, mark, t)),
                NodeMark::Up | NodeMark::Healed => {
                    let opener = if mark == NodeMark::Up {
                        NodeMark::Down
                    } else {
                        NodeMark::CutOff
                    };
                    if let Some(i) = open.iter().position(|&(m, o, _)| m == n && o == opener) {
                        let (_, _, from) = open.remove(i);
                        away.push((n, from, t));
                    }
                }
                _ => {}
            }
        }
        away.extend(open.into_iter().map(|(n, _, from)| (n, from, end)));
    }
    // The node was down or cut off when the slot's task there ended: the task ended with it.
    let was_away = |node: u32, at: Ms| {
        away.iter()
            .any(|&(n, a, b)| n == node && a <= at && at <= b)
    };
    let hidden = interesting.len().saturating_sub(MAX_NODE_ROWS);
    interesting.truncate(MAX_NODE_ROWS);
    interesting.sort_unstable();

    let _ = writeln!(body, r##"<text x="10" y="{y}" class="h">nodes</text>"##);
    y += 8;
    if let Some(run) = first {
        for &n in &interesting {
            let _ = writeln!(
                body,
                r##"<text x="10" y="{}" class="l">{}</text><rect x="{LEFT}" y="{y}" width="{}" height="{}" fill="#cfe8cf"/>"##,
                y + 12,
                esc(&names[n as usize]),
                W - LEFT - RIGHT,
                ROW - 3
            );
            let mut open: Vec<(NodeMark, Ms)> = Vec::new();
            // Written after the bands, or the down band that starts at the same instant hides it.
            let mut disk_lost: Vec<u64> = Vec::new();
            let close = |mark: NodeMark, from: Ms, to: Ms, body: &mut String| {
                let (fill, what) = match mark {
                    NodeMark::Down => ("#d9534f", "down"),
                    NodeMark::CutOff => ("#f0ad4e", "cut off from managers"),
                    NodeMark::Drain => ("#999999", "drained"),
                    _ => return,
                };
                let (x0, x1) = (sc.x(from), sc.x(to));
                let _ = writeln!(
                    body,
                    r##"<rect x="{x0}" y="{y}" width="{}" height="{}" fill="{fill}"><title>{} {what} {}–{}</title></rect>"##,
                    (x1 - x0).max(MIN_MARK),
                    ROW - 3,
                    esc(&names[n as usize]),
                    fmt_ms(from),
                    fmt_ms(to)
                );
            };
            for &(t, node, mark) in &run.timeline.node_log {
                if node != n {
                    continue;
                }
                let opener = match mark {
                    NodeMark::Up => Some(NodeMark::Down),
                    NodeMark::Healed => Some(NodeMark::CutOff),
                    NodeMark::Active => Some(NodeMark::Drain),
                    _ => None,
                };
                match opener {
                    Some(o) => {
                        if let Some(i) = open.iter().position(|(m, _)| *m == o) {
                            let (m, from) = open.remove(i);
                            close(m, from, t, &mut body);
                        }
                    }
                    None if mark == NodeMark::DiskLost => disk_lost.push(sc.x(t)),
                    None => open.push((mark, t)),
                }
            }
            for (m, from) in open {
                close(m, from, end, &mut body);
            }
            for x in disk_lost {
                let _ = writeln!(
                    body,
                    r##"<text x="{x}" y="{}" class="m">✕ disk</text>"##,
                    y + 11
                );
            }
            y += ROW;
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            body,
            r##"<text x="10" y="{}" class="l">… {hidden} more nodes</text>"##,
            y + 12
        );
        y += ROW;
    }
    // Which colour is which node's, for every node that ran a task.
    if !ran.is_empty() {
        y += 6;
        let _ = writeln!(
            body,
            r##"<text x="10" y="{}" class="l">slot colours</text>"##,
            y + 12
        );
        let mut x = LEFT;
        for &n in ran.iter().take(3 * PALETTE.len()) {
            let (fill, ink) = colour(n);
            let name = esc(&names[n as usize]);
            let w = 14 + 7 * names[n as usize].chars().count() as u64;
            if x + w > W - RIGHT {
                break;
            }
            let _ = writeln!(
                body,
                r##"<rect x="{x}" y="{y}" width="{w}" height="{}" fill="{fill}"><title>slots on {name}</title></rect><text x="{}" y="{}" class="t" fill="{ink}">{name}</text>"##,
                ROW - 3,
                x + 4,
                y + 10
            );
            x += w + 4;
        }
        y += ROW;
    }

    for run in &r.runs {
        y += 14;
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let _ = writeln!(
            body,
            r##"<text x="10" y="{}" class="h">{} <tspan class="c">— {}, {}, {}</tspan></text>"##,
            y + 12,
            run.policy.as_str(),
            plural(
                run.lost_writes,
                "acknowledged write lost",
                "acknowledged writes lost"
            ),
            plural(
                run.metrics.empty_volume_starts,
                "start on an empty volume",
                "starts on an empty volume"
            ),
            plural(
                run.metrics.double_writer_windows,
                "double-writer window",
                "double-writer windows"
            ),
        );
        let top = y + 16;
        y += 18;
        let mut rows = 0usize;
        for (si, svc) in scn.services.iter().enumerate() {
            let slots = svc.replicas.min(6);
            for slot in 1..=slots {
                if rows >= MAX_SLOT_ROWS {
                    break;
                }
                rows += 1;
                let _ = writeln!(
                    body,
                    r##"<text x="10" y="{}" class="l">{}.{slot}</text>"##,
                    y + 12,
                    esc(&svc.name)
                );
                let mut mine: Vec<(u32, Ms, Ms)> = run
                    .timeline
                    .tasks
                    .iter()
                    .filter(|t| t.0 as usize == si && t.1 == slot)
                    .map(|&(_, _, node, from, to)| (node, from, to.max(from)))
                    .collect();
                mine.sort_by_key(|&(node, from, to)| (from, to, node));
                // A stateful slot with no task while the node it last ran on was away, then
                // back on that same node (or still away at the end): it waited for its node.
                if svc.policy.stateful.is_some() {
                    for (i, &(node, _, stopped)) in mine.iter().enumerate() {
                        let next = mine.get(i + 1);
                        let (until, back) = match next {
                            Some(&(n, start, _)) if start > stopped && n == node => (start, true),
                            None if stopped < end => (end, false),
                            _ => continue,
                        };
                        if !was_away(node, stopped) {
                            continue;
                        }
                        let (x0, x1) = (sc.x(stopped), sc.x(until));
                        let _ = writeln!(
                            body,
                            r##"<rect x="{x0}" y="{y}" width="{}" height="{}" fill="url(#wait)"><title>{}.{slot} waits for {} {}–{}{}</title></rect>"##,
                            (x1 - x0).max(MIN_MARK),
                            ROW - 3,
                            esc(&svc.name),
                            esc(&names[node as usize]),
                            fmt_ms(stopped),
                            fmt_ms(until),
                            if back {
                                ", then restarts there"
                            } else {
                                " (the run ends)"
                            }
                        );
                    }
                }
                for &(node, from, to) in &mine {
                    let (x0, x1) = (sc.x(from), sc.x(to));
                    let width = (x1 - x0).max(1);
                    let (fill, ink) = colour(node);
                    let _ = writeln!(
                        body,
                        r##"<rect x="{x0}" y="{y}" width="{width}" height="{}" fill="{fill}"><title>{}.{slot} on {} {}–{}</title></rect>"##,
                        ROW - 3,
                        esc(&svc.name),
                        esc(&names[node as usize]),
                        fmt_ms(from),
                        fmt_ms(to)
                    );
                    if width > 60 {
                        let _ = writeln!(
                            body,
                            r##"<text x="{}" y="{}" class="t" fill="{ink}">{}</text>"##,
                            x0 + 3,
                            y + 10,
                            esc(&names[node as usize])
                        );
                    }
                }
                // What the service lost, once, on its first row's right edge.
                let lost = run.services.iter().find(|s| s.name == svc.name);
                if slot == 1
                    && let Some(o) = lost.filter(|o| o.lost_writes > 0)
                {
                    let _ = writeln!(
                        body,
                        r##"<text x="{}" y="{}" class="x" text-anchor="end">✕ {} lost<title>{}: {} acknowledged writes lost ({} beyond what its kind of data survives)</title></text>"##,
                        LEFT - 6,
                        y + 11,
                        o.lost_writes,
                        esc(&svc.name),
                        o.lost_writes,
                        o.lost_beyond_guarantee
                    );
                }
                for &(s, sl, from, to) in &run.timeline.double_writers {
                    if s as usize == si && sl == slot {
                        let (x0, x1) = (sc.x(from), sc.x(to));
                        let _ = writeln!(
                            body,
                            r##"<rect x="{x0}" y="{y}" width="{}" height="4" fill="#6a0dad"><title>{}.{slot}: two writers {}–{}</title></rect>"##,
                            (x1 - x0).max(MIN_MARK),
                            esc(&svc.name),
                            fmt_ms(from),
                            fmt_ms(to)
                        );
                    }
                }
                for &(s, from, to) in &run.timeline.outages {
                    if s as usize == si {
                        let (x0, x1) = (sc.x(from), sc.x(to));
                        let _ = writeln!(
                            body,
                            r##"<rect x="{x0}" y="{}" width="{}" height="3" fill="#d9534f"><title>{} unavailable {}–{}</title></rect>"##,
                            y + ROW - 4,
                            (x1 - x0).max(MIN_MARK),
                            esc(&svc.name),
                            fmt_ms(from),
                            fmt_ms(to)
                        );
                    }
                }
                y += ROW;
            }
        }
        for (t, label) in &run.timeline.markers {
            let x = sc.x(*t);
            let _ = writeln!(
                body,
                r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{y}" class="k"><title>{} {}</title></line>"##,
                fmt_ms(*t),
                esc(label)
            );
        }
    }

    // Time axis.
    y += 10;
    let steps: [Ms; 12] = [
        1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000,
        21_600_000, 43_200_000,
    ];
    let step = steps
        .iter()
        .copied()
        .find(|s| end / s <= 12)
        .unwrap_or(86_400_000);
    let mut t = 0;
    while t <= end {
        let x = sc.x(t);
        let _ = writeln!(
            body,
            r##"<line x1="{x}" y1="44" x2="{x}" y2="{y}" class="g"/><text x="{x}" y="{}" class="a" text-anchor="middle">{}</text>"##,
            y + 12,
            axis_label(t)
        );
        t += step;
    }
    let h = y + 24;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        out,
        "<style>.h{{font-size:13px;font-weight:bold}}.c{{font-weight:normal;font-size:11px}}.l{{font-size:11px}}.t{{font-size:9px}}.a{{font-size:9px;fill:#555}}.m{{font-size:9px;fill:#000}}.x{{font-size:10px;font-weight:bold;fill:#b52b27}}.g{{stroke:#eee}}.k{{stroke:#000;stroke-dasharray:3,2}}</style>"
    );
    let _ = writeln!(
        out,
        r##"<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="{WAIT}"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c98a2e" stroke-width="2"/></pattern></defs>"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="{W}" height="{h}" fill="#fff"/><text x="10" y="18" class="h">{} — seed {}</text><text x="10" y="34" class="l">nodes: green up, red down, orange cut off, grey drained; slots coloured by node; hatched: slot waits for its node; red underline: service unavailable; purple overline: two writers; ✕: acknowledged writes lost; dashed: failover</text>"##,
        esc(&r.scenario),
        r.seed
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}
