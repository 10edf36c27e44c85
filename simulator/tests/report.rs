//! What a reader of the report sees: a slot pending for the whole run with the engine's reason,
//! one unit per column, aligned tables.

use std::path::{Path, PathBuf};

use berth_sim::policy::PolicyKind;
use berth_sim::report::{self, Report};
use berth_sim::runner::run_one;
use berth_sim::scenario::{self, Scenario};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// The seed cluster with a fourth Mongo member, which three workers and anti-affinity cannot
/// place.
fn four_mongos(dir: &Path) -> Scenario {
    let text = std::fs::read_to_string(scenario_path("seed-cluster")).expect("read");
    let (head, tail) = text.split_once("name = \"mongo\"\n").expect("mongo");
    let tail = tail.replacen("replicas = 3", "replicas = 4", 1);
    let path = dir.join("four-mongos.toml");
    std::fs::write(&path, format!("{head}name = \"mongo\"\n{tail}")).expect("write");
    scenario::load(&path).expect("loads")
}

fn run_all(scn: &Scenario) -> Report {
    let schedule = scn.schedule(scn.seed);
    let runs = PolicyKind::ALL
        .iter()
        .map(|&p| run_one(scn, p, scn.seed, &schedule).expect("run"))
        .collect();
    Report::new(scn, scn.seed, &schedule, runs)
}

#[test]
fn a_slot_pending_all_run_is_explained_in_text_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = run_all(&four_mongos(dir.path()));
    let berth = r
        .runs
        .iter()
        .find(|run| run.policy == PolicyKind::Berth)
        .expect("berth");
    assert_eq!(berth.pending.len(), 1, "{:?}", berth.pending);
    let p = &berth.pending[0];
    assert_eq!((p.service.as_str(), p.slot), ("mongo", 4));
    assert!(
        p.reason.starts_with("0/6 nodes available: ") && p.reason.contains("anti-affinity"),
        "{}",
        p.reason
    );
    let text = report::summary(&r, "berth-sim run x");
    // Swarm's own reschedule may place it later (it ignores anti-affinity), so which policies
    // kept it pending is the run's business; the reason is the engine's.
    let line = text
        .lines()
        .find(|l| l.starts_with("  mongo slot 4 pending"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("berth") || !line.contains("(under"), "{line}");
    assert!(line.ends_with(&format!(": {}", p.reason)), "{line}");
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
    let runs = json["runs"].as_array().expect("runs");
    let berth_json = runs
        .iter()
        .find(|run| run["policy"] == "berth")
        .expect("berth");
    assert_eq!(berth_json["pending"][0]["service"], "mongo");
    assert_eq!(berth_json["pending"][0]["slot"], 4);
    assert_eq!(berth_json["pending"][0]["reason"], p.reason.as_str());
    // The trace says it in words too.
    assert!(
        berth
            .trace
            .iter()
            .any(|l| l.ends_with(&format!("mongo slot 4 pending: {}", p.reason))),
        "{:?}",
        &berth.trace[..3]
    );
}

#[test]
fn nothing_pending_when_every_slot_ran() {
    let scn = scenario::load(&scenario_path("seed-cluster")).expect("loads");
    let r = run_all(&scn);
    assert!(r.runs.iter().all(|run| run.pending.is_empty()));
    assert!(!report::summary(&r, "x").contains("pending"));
}

#[test]
fn one_unit_per_column_and_aligned_tables() {
    let scn = scenario::load(&scenario_path("seed-cluster")).expect("loads");
    let r = run_all(&scn);
    let text = report::summary(&r, "x");
    let lines: Vec<&str> = text.lines().collect();
    let table = |first: &str| -> Vec<&str> {
        let at = lines
            .iter()
            .position(|l| l.starts_with(first))
            .expect(first);
        lines[at..]
            .iter()
            .take_while(|l| !l.is_empty())
            .copied()
            .collect()
    };
    let comparison = table("policy ");
    assert_eq!(comparison.len(), 4, "{text}");
    let units: Vec<&str> = comparison[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.ends_with("iB")))
        .collect();
    assert_eq!(units.len(), 3, "{text}");
    assert!(units.iter().all(|u| *u == units[0]), "{text}");
    // The policies' heading line sits above the `service` line.
    let heading = lines
        .iter()
        .position(|l| l.starts_with("service "))
        .expect("service")
        - 1;
    let per_service = table(lines[heading]);
    assert_eq!(per_service.len(), 2 + scn.services.len(), "{text}");
    let by_kind = table("lost writes by data ");
    assert_eq!(by_kind.len(), 4, "{text}");
    assert!(by_kind[2].starts_with("local "), "{text}");
    for t in [&comparison, &per_service, &by_kind] {
        let width = t[1].chars().count();
        assert!(t.iter().all(|l| l.chars().count() == width), "{text}");
    }
}

#[test]
fn byte_columns_take_the_largest_value_s_unit() {
    assert_eq!(
        report::bytes_column([10 << 30, 8192 << 20, 0]),
        ["10.0 GiB", "8.0 GiB", "0.0 GiB"]
    );
    assert_eq!(report::bytes_column([512u64, 100]), ["512 B", "100 B"]);
}

/// `attr="value"` of the first such attribute in an SVG element.
fn attr<'a>(element: &'a str, name: &str) -> &'a str {
    let from = element.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
    let len = element[from..].find('"').expect("closing quote");
    &element[from..from + len]
}

/// The hue (degrees) of `#rrggbb`.
fn hue(rgb: &str) -> i64 {
    let c = |i: usize| i64::from_str_radix(&rgb[i..i + 2], 16).expect("hex");
    let (r, g, b) = (c(1), c(3), c(5));
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return 0;
    }
    let d = max - min;
    let h = if max == r {
        60 * (g - b) / d
    } else if max == g {
        120 + 60 * (b - r) / d
    } else {
        240 + 60 * (r - g) / d
    };
    h.rem_euclid(360)
}

#[test]
fn plot_slots_do_not_look_like_node_states_and_short_outages_show() {
    let scn = scenario::load(&scenario_path("seed-cluster")).expect("loads");
    let r = run_all(&scn);
    let svg = berth_sim::plot::svg(&scn, &r);
    // Node states: up, down, cut off, drained; then the outage red and double-writer purple.
    let reserved = ["#cfe8cf", "#d9534f", "#f0ad4e", "#999999", "#6a0dad"];
    let rects: Vec<&str> = svg.lines().filter(|l| l.starts_with("<rect")).collect();
    let slots: Vec<&&str> = rects.iter().filter(|l| l.contains(" on ")).collect();
    assert!(!slots.is_empty());
    for l in &slots {
        let fill = attr(l, "fill");
        assert!(!reserved.contains(&fill), "{l}");
        // Blues and violets only: no green, orange or red a reader could take for a node state.
        let h = hue(fill);
        assert!((180..=300).contains(&h), "{fill}: hue {h}");
    }
    // Berth's InfluxDB outage (a promotion, seconds) is under 3 px at an hour's scale.
    let outages: Vec<&&str> = rects
        .iter()
        .filter(|l| l.contains(" unavailable "))
        .collect();
    assert!(!outages.is_empty());
    for l in outages {
        let w: u64 = attr(l, "width").parse().expect("width");
        assert!(w >= 3, "{l}");
    }
}
