use super::*;
use crate::model::{Availability, Mode, NodeState, PublishMode, Role, TaskState};

const NODES: &str = include_str!("../../../examples/docker-inspect/nodes.json");
const SERVICES: &str = include_str!("../../../examples/docker-inspect/services.json");
const TASKS: &str = include_str!("../../../examples/docker-inspect/tasks.json");

#[test]
fn real_docker_json_parses() {
    let nodes = nodes("nodes.json", NODES).unwrap();
    assert_eq!(nodes.len(), 4);
    let w3 = nodes.iter().find(|n| n.hostname == "worker3").unwrap();
    assert_eq!(
        (w3.role, w3.state, w3.availability),
        (Role::Worker, NodeState::Ready, Availability::Active)
    );
    assert_eq!(w3.labels.get("zone").map(String::as_str), Some("b"));
    assert_eq!(w3.platform.os, "linux");
    assert!(w3.resources.memory_bytes > 0 && w3.resources.nano_cpus > 0);
    assert!(
        w3.plugins
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.kind == "Volume" && p.name == "local")
    );
    assert_eq!(nodes.iter().filter(|n| n.role == Role::Manager).count(), 1);

    let services = services("services.json", SERVICES).unwrap();
    let mongo = services.iter().find(|s| s.name == "mongo").unwrap();
    assert_eq!(mongo.mode, Mode::Replicated { replicas: 3 });
    assert_eq!(mongo.placement.constraints, ["node.role==worker"]);
    assert_eq!(mongo.reservations.memory_bytes, 1 << 30);
    assert_eq!(mongo.mounts[0].source, "mongo-data-{{.Task.Slot}}");
    assert_eq!(
        mongo.policy().unwrap().stateful.unwrap().volume_for_slot(2),
        "mongo-data-2"
    );
    let api = services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.placement.preferences, ["node.labels.zone"]);
    assert_eq!(
        services.iter().find(|s| s.name == "logspout").unwrap().mode,
        Mode::Global
    );

    let tasks = tasks("tasks.json", TASKS).unwrap();
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count(),
        10
    );
    assert!(
        tasks
            .iter()
            .filter(|t| t.service_id == mongo.id)
            .all(|t| t.slot.is_some())
    );
    assert!(
        tasks
            .iter()
            .filter(|t| t.slot.is_none())
            .all(|t| t.node_id.is_some())
    );
}

#[test]
fn docker_json_errors_name_file_line_and_field() {
    let bad_role = r#"[{"ID": "n1", "Spec": {"Role": "boss"}}]"#;
    let err = nodes("nodes.json", bad_role).unwrap_err().to_string();
    assert!(err.starts_with("nodes.json:1:"), "{err}");
    assert!(err.contains("[0].Spec.Role"), "{err}");
    assert!(err.contains("boss"), "{err}");
    let truncated = "[\n  {\"ID\": \"n1\",\n";
    let err = nodes("nodes.json", truncated).unwrap_err().to_string();
    assert!(err.starts_with("nodes.json:3:"), "{err}");
    let no_id = r#"[{"Spec": {"Name": "web"}}]"#;
    assert_eq!(
        services("s.json", no_id).unwrap_err().to_string(),
        "s.json: [0].ID: missing"
    );
    let job = r#"[{"ID": "x", "Spec": {"Name": "once", "Mode": {"ReplicatedJob": {}}}}]"#;
    assert!(
        services("s.json", job)
            .unwrap_err()
            .to_string()
            .contains("job modes")
    );
}

#[test]
fn compact_form() {
    let text = r#"
[[nodes]]
id = "w1"
role = "worker"
cpus = 1.5
memory = "1.5GiB"
labels = { zone = "a" }
plugins = ["Volume/berth"]

[[services]]
name = "web"
replicas = 2
reserve_memory = 268435456
ports = [{ published = 80, target = 8080, mode = "host" }]
platforms = ["linux/arm64"]

[[services]]
name = "mon"
mode = "global"

[[tasks]]
service = "web"
slot = 1
node = "w1"

[[datasets]]
name = "d-1"
service = "web"
slot = 1
primary = "w1"
size = "10GiB"
"#;
    let c = cluster("c.toml", text).unwrap();
    let w1 = &c.nodes[0];
    assert_eq!(
        (w1.resources.nano_cpus, w1.resources.memory_bytes),
        (1_500_000_000, 3 << 29)
    );
    assert_eq!(w1.plugins.as_ref().unwrap()[0].name, "berth");
    assert_eq!(c.services[0].ports[0].publish_mode, PublishMode::Host);
    assert_eq!(c.services[0].reservations.memory_bytes, 256 << 20);
    assert_eq!(c.services[0].placement.platforms[0].architecture, "arm64");
    assert_eq!(c.services[1].mode, Mode::Global);
    assert_eq!(c.tasks[0].service_id.0, "web");
    assert_eq!(c.datasets[0].size_bytes, 10 << 30);
    // The same file read section by section.
    assert_eq!(nodes("c.toml", text).unwrap(), c.nodes);
    assert_eq!(services("c.toml", text).unwrap(), c.services);
}

#[test]
fn compact_errors_name_file_line_and_field() {
    let typo = "[[nodes]]\nid = \"a\"\nmemroy = \"1GiB\"\n";
    let err = nodes("n.toml", typo).unwrap_err().to_string();
    assert!(err.starts_with("n.toml: "), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("unknown field `memroy`"), "{err}");
    let size = "[[nodes]]\nid = \"a\"\nmemory = \"4XB\"\n";
    assert_eq!(
        nodes("n.toml", size).unwrap_err().to_string(),
        "n.toml: nodes[0].memory: `4XB`: expected a size such as 4096, 512KiB, 100MiB, 1.5GiB or 10g (binary units)"
    );
    let dup = "[[nodes]]\nid = \"a\"\n[[nodes]]\nid = \"a\"\n";
    assert_eq!(
        nodes("n.toml", dup).unwrap_err().to_string(),
        "n.toml: node id: `a` appears twice"
    );
    let state = "[[nodes]]\nid = \"a\"\nstate = \"asleep\"\n";
    assert!(
        nodes("n.toml", state)
            .unwrap_err()
            .to_string()
            .contains("unknown variant `asleep`")
    );
    let missing = "[[services]]\nname = \"x\"\n";
    assert_eq!(
        nodes("s.toml", missing).unwrap_err().to_string(),
        "s.toml: nodes: no [[nodes]] section"
    );
    let global = "[[services]]\nname = \"x\"\nmode = \"global\"\nreplicas = 2\n";
    assert!(
        services("s.toml", global)
            .unwrap_err()
            .to_string()
            .contains("a global service has no replica count")
    );
    assert!(cluster("c.json", "[]").is_err());
}

#[test]
fn sizes() {
    use super::compact::parse_size;
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("1k"), Ok(1024));
    assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
    assert_eq!(parse_size("1.5g"), Ok(3 << 29));
    assert!(parse_size("-1G").is_err());
    assert!(parse_size("G").is_err());
}

#[test]
fn compact_and_docker_forms_of_a_service_agree() {
    let docker = services("services.json", SERVICES).unwrap();
    let api = docker.iter().find(|s| s.name == "api").unwrap();
    let text = format!(
        "[[services]]\nname = \"api\"\nid = \"{}\"\nreplicas = 3\nconstraints = [\"node.role==worker\"]\npreferences = [\"spread=node.labels.zone\"]\nreserve_memory = \"256MiB\"\nlabels = {{ \"berth.depends-on\" = \"mongo\" }}\n",
        api.id
    );
    let compact = services("services.toml", &text).unwrap();
    assert_eq!(&compact[0], api);
}
