use berth_control_model::wire::VolumeRecord;
use serde_json::json;

use super::*;

fn service(v: serde_json::Value) -> DService {
    serde_json::from_value(v).expect("a Docker service")
}

fn template_json(replicas: u64, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "ID": "tmpl1", "Version": {"Index": 7},
        "Spec": {
            "Name": "app_mongo",
            "Labels": labels,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "mongo:7",
                    "Args": ["--replSet", "rs0"],
                    "Mounts": [{"Type": "volume", "Source": "mongo-data-{{.Task.Slot}}", "Target": "/data/db",
                                "VolumeOptions": {"DriverConfig": {"Name": "berth"}}}]
                },
                "Placement": {"Constraints": ["node.role==worker"]},
                "Networks": [{"Target": "net1", "Aliases": ["mongo"]}]
            }
        }
    })
}

fn mongo_labels() -> serde_json::Value {
    json!({
        "berth.stateful": "true", "berth.volume": "mongo-data-{slot}", "berth.replicas": "3",
        "berth.failover": "recreate", "com.docker.stack.namespace": "app"
    })
}

fn node(id: &str) -> bollard_stubs::models::Node {
    serde_json::from_value(json!({
        "ID": id, "Spec": {"Role": "worker", "Availability": "active"},
        "Description": {"Hostname": id}, "Status": {"State": "ready"}
    }))
    .expect("a Docker node")
}

fn state_with_slots() -> SwarmState {
    let t = Observed::new(SwarmState {
        services: vec![service(template_json(0, mongo_labels()))],
        ..Default::default()
    });
    let tmpl = &t.templates["tmpl1"];
    let mut services = vec![service(template_json(0, mongo_labels()))];
    for (slot, n) in [(1u64, "w1"), (2, "w2")] {
        let spec = slot_spec(tmpl, slot, n);
        services.push(service(json!({
            "ID": format!("slot{slot}"), "Version": {"Index": 3},
            "Spec": serde_json::to_value(&spec).unwrap()
        })));
    }
    services.push(service(json!({
        "ID": "plain", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
                               "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}}
    })));
    let tasks = vec![
        serde_json::from_value(
            json!({"ID": "t1", "ServiceID": "slot1", "Slot": 1, "NodeID": "w1",
            "Status": {"State": "running"}, "DesiredState": "running"}),
        )
        .unwrap(),
        serde_json::from_value(
            json!({"ID": "t2", "ServiceID": "plain", "Slot": 1, "NodeID": "w3",
            "Status": {"State": "running"}, "DesiredState": "running"}),
        )
        .unwrap(),
    ];
    SwarmState {
        nodes: vec![node("w1"), node("w2"), node("w3")],
        services,
        tasks,
    }
}

#[test]
fn templates_are_told_apart_from_slot_services_and_the_rest() {
    let o = Observed::new(state_with_slots());
    assert_eq!(o.templates.keys().collect::<Vec<_>>(), ["tmpl1"]);
    let t = &o.templates["tmpl1"];
    assert_eq!((t.slots, t.own_replicas, t.version), (3, 0, 7));
    assert_eq!(t.short_name, "mongo");
    assert_eq!(o.slots.len(), 2);
    let s1 = &o.slots[&("tmpl1".to_string(), 1)];
    assert_eq!(
        (s1.name.as_str(), s1.node.as_deref()),
        ("app_mongo-1", Some("w1"))
    );
    assert_eq!(s1.hash, t.hash);
    assert!(o.invalid.is_empty());
}

#[test]
fn the_engine_sees_the_template_with_its_slots_as_tasks() {
    let o = Observed::new(state_with_slots());
    let (c, warnings) = o.cluster();
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["app_mongo", "web"],
        "slot services are not services of their own"
    );
    assert_eq!(
        c.services[0].mode,
        Mode::Replicated { replicas: 3 },
        "the template's slot count, not its 0 own replicas"
    );
    let mut slots: Vec<(Option<u64>, Option<String>, TaskState)> = c
        .tasks
        .iter()
        .filter(|t| t.service_id.0 == "tmpl1")
        .map(|t| (t.slot, t.node_id.as_ref().map(|n| n.0.clone()), t.state))
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        [
            (Some(1), Some("w1".into()), TaskState::Running),
            // No task yet: the slot still holds its node, so the engine does not place it twice.
            (Some(2), Some("w2".into()), TaskState::Assigned),
        ]
    );
    let plan = berth_scheduler::schedule::plan(&c).expect("plans");
    let new: Vec<(&str, Option<u64>)> = plan
        .placements
        .iter()
        .filter(|p| p.new && p.service == "app_mongo")
        .map(|p| (p.node.as_str(), p.slot))
        .collect();
    assert_eq!(new, [("w3", Some(3))], "only the missing slot is placed");
}

#[test]
fn tasks_of_a_service_removed_meanwhile_are_left_out() {
    let mut state = state_with_slots();
    state.tasks.push(
        serde_json::from_value(
            json!({"ID": "t9", "ServiceID": "gone", "Slot": 1, "NodeID": "w1",
            "Status": {"State": "shutdown"}, "DesiredState": "shutdown"}),
        )
        .unwrap(),
    );
    let (c, _) = Observed::new(state).cluster();
    assert!(c.tasks.iter().all(|t| t.service_id.0 != "gone"));
    berth_scheduler::schedule::plan(&c).expect("the engine accepts it");
}

#[test]
fn a_slot_service_is_the_template_pinned_to_a_node() {
    let o = Observed::new(SwarmState {
        services: vec![service(template_json(0, mongo_labels()))],
        ..Default::default()
    });
    let spec = slot_spec(&o.templates["tmpl1"], 2, "nodeB");
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["Name"], "app_mongo-2");
    assert_eq!(v["Mode"], json!({"Replicated": {"Replicas": 1}}));
    assert_eq!(
        v["TaskTemplate"]["Placement"]["Constraints"],
        json!(["node.role==worker", "node.id==nodeB"])
    );
    assert_eq!(
        v["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"],
        "mongo-data-2"
    );
    assert_eq!(
        v["TaskTemplate"]["Networks"][0]["Aliases"],
        json!(["mongo", "mongo-2"])
    );
    let labels = v["Labels"].as_object().unwrap();
    let mut keys: Vec<&str> = labels.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [OWNER, OWNER_NAME, SLOT, STACK, TEMPLATE_HASH],
        "no berth.* policy labels (it is not a template) and no stack label (stack deploy \
         --prune would remove it)"
    );
    // Re-pinning replaces the node constraint rather than adding a second one.
    let o2 = Observed::new(SwarmState {
        services: vec![service(
            json!({"ID": "x", "Spec": serde_json::to_value(&spec).unwrap()}),
        )],
        ..Default::default()
    });
    assert!(
        o2.templates.is_empty(),
        "a slot service is never taken for a template"
    );
}

#[test]
fn the_template_hash_ignores_map_order_and_follows_the_image() {
    let a = service(template_json(0, mongo_labels())).spec.unwrap();
    let mut b = a.clone();
    // Same env and labels in another insertion order: same hash.
    let env_labels: HashMap<String, String> = (0..20)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let mut rev: Vec<_> = env_labels.clone().into_iter().collect();
    rev.reverse();
    let mut a2 = a.clone();
    a2.task_template
        .as_mut()
        .unwrap()
        .container_spec
        .as_mut()
        .unwrap()
        .labels = Some(env_labels);
    b.task_template
        .as_mut()
        .unwrap()
        .container_spec
        .as_mut()
        .unwrap()
        .labels = Some(rev.into_iter().collect());
    assert_eq!(template_hash(&a2), template_hash(&b));
    let mut c = a.clone();
    c.task_template
        .as_mut()
        .unwrap()
        .container_spec
        .as_mut()
        .unwrap()
        .image = Some("mongo:8".into());
    assert_ne!(template_hash(&a), template_hash(&c));
    // The template's own labels (berth.replicas, …) are not part of what slots run.
    let mut d = a.clone();
    d.labels
        .as_mut()
        .unwrap()
        .insert(REPLICAS.into(), "5".into());
    assert_eq!(template_hash(&a), template_hash(&d));
}

#[test]
fn a_template_without_its_volume_mount_is_reported_not_run() {
    let mut v = template_json(3, mongo_labels());
    v["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] = json!("other");
    let o = Observed::new(SwarmState {
        services: vec![service(v)],
        ..Default::default()
    });
    assert!(o.templates.is_empty());
    assert_eq!(o.invalid.len(), 1);
    assert!(
        o.invalid[0]
            .to_string()
            .contains("no mount's source gives the slot's volume `mongo-data-1`"),
        "{}",
        o.invalid[0]
    );
}

#[test]
fn adopting_a_template_with_replicas_records_them_and_quiesces_it() {
    let mut labels = mongo_labels();
    labels.as_object_mut().unwrap().remove("berth.replicas");
    let o = Observed::new(SwarmState {
        services: vec![service(template_json(3, labels))],
        ..Default::default()
    });
    let t = &o.templates["tmpl1"];
    assert_eq!((t.slots, t.own_replicas), (3, 3));
    let q = quiesced_template(t);
    assert_eq!(replicas(&q), Some(0));
    assert_eq!(q.labels.unwrap()[REPLICAS], "3");
}

fn record(
    name: &str,
    epoch: u64,
    primary: Option<&str>,
    fenced_from: Option<&str>,
) -> VolumeRecord {
    serde_json::from_value(json!({
        "name": name, "dataset_id": format!("uuid-{name}"), "epoch": epoch,
        "primary": primary, "fenced_from": fenced_from, "backend": "shared",
        "mounted_on": primary, "standbys": [], "whole_copy_on": [], "replicas": 1,
        "maximum_size": 1024, "profile": null, "version": 1, "source": null,
        "recreated": false, "promoted": false
    }))
    .expect("a volume record")
}

#[test]
fn datasets_come_from_the_control_services_records() {
    let o = Observed::new(state_with_slots());
    let ds = o.datasets(&[
        record("mongo-data-1", 4, Some("w1"), None),
        // Fenced away from w2 by a failover cut short: shown as before the fence, so the
        // plan's fence (expect 6) is the replay the control service answers as done.
        record("mongo-data-2", 7, None, Some("w2")),
        record("unrelated", 1, Some("w3"), None),
    ]);
    let got: Vec<(String, u64, Option<String>, u64)> = ds
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.slot,
                d.primary.clone().map(|n| n.0),
                d.epoch,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("mongo-data-1".into(), 1, Some("w1".into()), 4),
            ("mongo-data-2".into(), 2, Some("w2".into()), 6),
        ]
    );
    assert!(
        ds.iter()
            .all(|d| d.service == "app_mongo"
                && d.backend == berth_scheduler::model::Backend::Shared)
    );
    assert_eq!(
        ds.iter().map(|d| d.fenced).collect::<Vec<_>>(),
        [false, true],
        "the fenced one is marked: the plan assigns it before starting it"
    );
}

#[test]
fn the_standby_shown_is_one_a_promotion_can_use() {
    let o = Observed::new(state_with_slots());
    let mut r = record("mongo-data-1", 4, Some("w1"), None);
    let sb = |node: &str, epoch: Option<u64>, lag: Option<u64>| {
        serde_json::from_value::<berth_control_model::wire::StandbyRecord>(json!({
            "node": node, "epoch": epoch, "lag_ms": lag, "lag_bytes": null
        }))
        .expect("a standby record")
    };
    // w2 holds nothing shipped yet (a new standby, or a wiped one): the service would refuse
    // to promote it. Of the two that hold a copy, w4 is the least behind.
    r.standbys = vec![
        sb("w2", None, None),
        sb("w3", Some(4), Some(900)),
        sb("w4", Some(4), Some(120)),
    ];
    let ds = o.datasets(std::slice::from_ref(&r));
    assert_eq!(ds[0].standby.as_ref().map(|n| n.0.as_str()), Some("w4"));
    r.standbys.truncate(1);
    let ds = o.datasets(&[r]);
    assert_eq!(ds[0].standby, None, "no usable standby: none is shown");
}

#[test]
fn tasks_of_a_removed_node_make_it_a_down_node_not_an_error() {
    let mut st = state_with_slots();
    st.nodes.retain(|n| n.id.as_deref() != Some("w1"));
    let o = Observed::new(st);
    let (cluster, _) = o.cluster();
    let w1 = cluster
        .nodes
        .iter()
        .find(|n| n.id.0 == "w1")
        .expect("w1 stands in for the removed node");
    assert_eq!(w1.state, berth_scheduler::model::NodeState::Down);
    berth_scheduler::schedule::plan(&cluster).expect("the engine plans the swarm");
}

#[test]
fn a_slot_whose_node_is_down_stays_on_that_node_for_the_engine() {
    let mut st = state_with_slots();
    // w1 is down: Swarm shut its task down and made one it cannot place.
    st.nodes[0] = serde_json::from_value(json!({
        "ID": "w1", "Spec": {"Role": "worker", "Availability": "active"},
        "Description": {"Hostname": "w1"}, "Status": {"State": "down"}
    }))
    .unwrap();
    st.tasks[0] = serde_json::from_value(json!({"ID": "t1", "ServiceID": "slot1", "Slot": 1,
        "NodeID": "w1", "Status": {"State": "running"}, "DesiredState": "shutdown"}))
    .unwrap();
    st.tasks.push(
        serde_json::from_value(json!({"ID": "t1b", "ServiceID": "slot1", "Slot": 1,
            "Status": {"State": "pending"}, "DesiredState": "running"}))
        .unwrap(),
    );
    let (c, _) = Observed::new(st).cluster();
    let slot1: Vec<(Option<String>, TaskState, TaskState)> = c
        .tasks
        .iter()
        .filter(|t| t.service_id.0 == "tmpl1" && t.slot == Some(1) && t.is_active())
        .map(|t| {
            (
                t.node_id.as_ref().map(|n| n.0.clone()),
                t.state,
                t.desired_state,
            )
        })
        .collect();
    assert_eq!(
        slot1,
        [(Some("w1".into()), TaskState::Assigned, TaskState::Running)],
        "the slot is wanted on its lost node, so the node's failover plan covers it"
    );
}
