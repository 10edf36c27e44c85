use super::*;
use crate::model::{Node, Role};

fn node() -> Node {
    let mut n = Node::new("nodeid-1");
    n.hostname = "Worker-1".into();
    n.role = Role::Worker;
    n.addr = "10.0.3.7".into();
    n.platform.os = "linux".into();
    n.platform.architecture = "x86_64".into();
    n.labels.insert("zone".into(), "eu-A".into());
    n.labels.insert("Disk".into(), "ssd".into());
    n.engine_labels.insert("storage".into(), "nvme".into());
    n
}

#[test]
fn parse_errors_name_the_token() {
    let cases = [
        ("", "expected one operator from ==, !="),
        (" ", "expected one operator from ==, !="),
        ("nodeabc", "expected one operator"),
        ("node ~ abc", "expected one operator"),
        ("node.labels.zone>=a", "expected one operator"),
        ("1node==a2", "key '1node' is invalid"),
        ("n==a", "key 'n' is invalid"),
        ("node.labels.a!==b", "key 'node.labels.a!' is invalid"),
        (
            "node.labels.abc!=node1==abc",
            "key 'node.labels.abc!=node1' is invalid",
        ),
        (
            "node.labels.abc==node1!=abc",
            "value 'node1!=abc' is invalid",
        ),
        ("node.labels.zone==", "value '' is invalid"),
        ("node.labels.zone==a>b", "value 'a>b' is invalid"),
        ("node.labels.zone==é", "value 'é' is invalid"),
    ];
    for (expr, want) in cases {
        let err = Constraint::parse(expr).unwrap_err().to_string();
        assert!(err.contains(want), "{expr:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn parse_trims_and_keeps_case_of_key_and_value() {
    let c = Constraint::parse(" node.labels.Disk == SSD ").unwrap();
    assert_eq!(
        (c.key.as_str(), c.operator, c.value.as_str()),
        ("node.labels.Disk", Operator::Eq, "SSD")
    );
    assert_eq!(c.to_string(), "node.labels.Disk==SSD");
    // Regex-ish characters are legal values in Swarm (and compared literally).
    assert!(Constraint::parse("node.labels.k==a*b(c)?+[d]\\^$|/e:f g").is_ok());
    assert!(Constraint::parse("_private.key!=x").is_ok());
}

#[test]
fn matching_follows_swarm() {
    let n = node();
    let cases = [
        ("node.id==nodeid-1", true),
        ("NODE.ID==NODEID-1", true),
        ("node.id!=nodeid-1", false),
        ("node.hostname==worker-1", true),
        ("node.role==worker", true),
        ("node.role==WORKER", true),
        ("node.role!=manager", true),
        ("node.platform.os==Linux", true),
        // Swarm compares the raw architecture string; only the platform filter normalises.
        ("node.platform.arch==x86_64", true),
        ("node.platform.arch==amd64", false),
        ("node.labels.zone==eu-a", true),
        ("NODE.LABELS.zone==eu-a", true),
        // Label names are case-sensitive.
        ("node.labels.ZONE==eu-a", false),
        ("node.labels.Disk==ssd", true),
        ("node.labels.disk==ssd", false),
        // A missing label is the empty string: != holds.
        ("node.labels.rack!=r1", true),
        ("node.labels.rack==r1", false),
        ("engine.labels.storage==NVME", true),
        ("engine.labels.storage!=nvme", false),
        ("node.ip==10.0.3.7", true),
        ("node.ip!=10.0.3.7", false),
        ("node.ip==10.0.0.0/16", true),
        ("node.ip!=10.0.0.0/16", false),
        ("node.ip==10.1.0.0/16", false),
        ("node.ip!=10.1.0.0/16", true),
        // A malformed address matches nothing, with either operator.
        ("node.ip==banana", false),
        ("node.ip!=banana", false),
        // Unknown keys parse but match no node.
        ("node.name==worker-1", false),
        ("node.name!=worker-1", false),
    ];
    for (expr, want) in cases {
        let c = Constraint::parse(expr).unwrap();
        assert_eq!(c.matches(&n), want, "{expr}");
    }
    assert!(!Constraint::parse("node.name==x").unwrap().is_known_key());
    assert!(
        Constraint::parse("Engine.Labels.x==y")
            .unwrap()
            .is_known_key()
    );
}

#[test]
fn all_must_hold() {
    let n = node();
    let both = parse_all(&["node.role==worker", "node.labels.zone==eu-a"]).unwrap();
    assert!(node_matches(&both, &n));
    let one_fails = parse_all(&["node.role==worker", "node.labels.zone==eu-b"]).unwrap();
    assert!(!node_matches(&one_fails, &n));
    assert!(node_matches(&[], &n));
    assert!(parse_all(&["node.role==worker", "bad"]).is_err());
}

#[test]
fn ipv6_and_mapped_addresses() {
    let mut n = node();
    n.addr = "2001:db8::2".into();
    assert!(
        Constraint::parse("node.ip==2001:db8::2")
            .unwrap()
            .matches(&n)
    );
    assert!(
        Constraint::parse("node.ip==2001:db8::/32")
            .unwrap()
            .matches(&n)
    );
    assert!(
        !Constraint::parse("node.ip==10.0.0.0/8")
            .unwrap()
            .matches(&n)
    );
    n.addr = "::ffff:10.0.3.7".into();
    assert!(
        Constraint::parse("node.ip==10.0.0.0/8")
            .unwrap()
            .matches(&n)
    );
}

#[test]
fn unknown_keys_suggest_the_likely_one() {
    let hint = |e: &str| Constraint::parse(e).unwrap().suggest_key();
    assert_eq!(hint("node.lables.zone==a"), Some("node.labels.zone".into()));
    assert_eq!(hint("node.label.zone==a"), Some("node.labels.zone".into()));
    assert_eq!(
        hint("engine.lables.disk==ssd"),
        Some("engine.labels.disk".into())
    );
    assert_eq!(hint("node.hostnme==w1"), Some("node.hostname".into()));
    assert_eq!(hint("node.rol==worker"), Some("node.role".into()));
    assert_eq!(hint("node.labels.zone==a"), None);
    assert_eq!(hint("cluster.region==eu"), None);
}
