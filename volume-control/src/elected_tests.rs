//! Two control instances on one Consul (the documented-shapes fake, whose servers' clock the test
//! moves), each elected through a session lock: exactly one serves, the other names it; a
//! deposed leader's write is refused by Consul; the next one takes over only after the
//! lock-delay, with every acknowledged change and the lease grace.

use std::sync::Arc;
use std::time::Duration;

use berth_consul_fake::FakeAgent;
use berth_control_model::liveness::Timing;
use berth_volume_client::{ClientError, ControlClient};

use super::*;
use crate::api::Shared;
use crate::api::{Control, serve};
use crate::consul_store::{ConsulStore, KEY};

const TTL: Duration = Duration::from_secs(10);

struct Instance {
    control: Shared,
    elected: Arc<Elected>,
    url: String,
}

async fn instance(fake: &FakeAgent) -> Instance {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let store = Arc::new(ConsulStore::new(&fake.url).expect("store"));
    let consul = Consul::new(&fake.url, None, Duration::from_secs(5)).expect("client");
    let config = ElectionConfig {
        key: "berth/control/leader".into(),
        ttl: TTL,
        lock_delay: TTL,
        identity: url.clone(),
    };
    let elected = Arc::new(Elected::new(consul, store.clone(), config).expect("config"));
    let control = Arc::new(
        Control::open_elected(store, elected.clone(), None, Timing::default())
            .await
            .expect("open"),
    );
    tokio::spawn(serve(l, control.clone(), std::future::pending()));
    Instance {
        control,
        elected,
        url,
    }
}

fn meta(name: &str) -> std::collections::BTreeMap<String, String> {
    [(
        berth_control_model::options::META_NAME.to_string(),
        name.to_string(),
    )]
    .into()
}

async fn status_of(url: &str) -> (u16, serde_json::Value) {
    use berth_volume_client::http_client::{Target, send};
    let r = send(
        &Target::Tcp(url.trim_start_matches("http://").to_string()),
        hyper::Method::GET,
        "/v1/configuration/datasets",
        &[],
        Vec::new(),
    )
    .await
    .expect("reachable");
    (
        r.status.as_u16(),
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

#[tokio::test]
async fn one_serves_a_deposed_one_cannot_write_and_the_next_takes_everything_over() {
    let fake = FakeAgent::start(None).await;
    let a = instance(&fake).await;
    let b = instance(&fake).await;
    a.elected.round(&a.control).await.expect("a's round");
    b.elected.round(&b.control).await.expect("b's round");
    assert!(a.elected.serving() && !b.elected.serving());
    assert_eq!(b.elected.leader_url().as_deref(), Some(a.url.as_str()));

    // The standby answers 503 naming the leader; a client given both follows it.
    let (code, body) = status_of(&b.url).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["leader"], a.url.as_str(), "{body}");
    let both = ControlClient::new(&format!("{},{}", b.url, a.url), None).expect("client");
    both.create("n1", None, &meta("v1"), None)
        .await
        .expect("acknowledged by the leader");
    both.register_node("n1", "h1", "127.0.0.1:1")
        .await
        .expect("node registered");

    // A's session ends (its node failed, say): A still believes it leads until its deadline,
    // but Consul refuses its write, and A stops serving at once.
    let sid = a.elected.session().expect("a's session");
    fake.expire_session(&sid);
    assert!(a.elected.serving(), "nothing has told A yet");
    let only_a = ControlClient::new(&a.url, None).expect("client");
    let e = only_a
        .create("n1", None, &meta("v2"), None)
        .await
        .expect_err("a deposed leader's write");
    assert_eq!(e.status(), Some(503), "{e}");
    assert!(!a.elected.serving(), "a refused write stops serving");
    let stored = fake.state.lock().expect("fake").kv[KEY].value.clone();
    assert!(!String::from_utf8_lossy(&stored).contains("v2"));

    // B cannot take the key during the lock-delay, then can; it serves A's acknowledged state
    // and counts A's node as leased for one full lease from its takeover.
    b.elected.round(&b.control).await.expect("b's round");
    assert!(!b.elected.serving(), "lock-delay");
    fake.advance(TTL);
    b.elected.round(&b.control).await.expect("b's round");
    assert!(b.elected.serving(), "the lock-delay has run out");
    let names: Vec<String> = both
        .datasets()
        .await
        .expect("datasets")
        .0
        .into_iter()
        .filter_map(|d| {
            d.metadata
                .get(berth_control_model::options::META_NAME)
                .cloned()
        })
        .collect();
    assert_eq!(names, ["v1"], "every acknowledged change, nothing refused");
    let node = b
        .control
        .node_liveness()
        .into_iter()
        .find(|n| n.node == "n1")
        .expect("A's node");
    assert!(
        node.lease_expires_in_ms > Timing::default().lease_ms - 1000,
        "a node A may have leased is held for a lease from B's takeover: {node:?}"
    );

    // A comes back as a standby naming B; B resigns, and A takes over at its next round (a
    // release has no lock-delay), with B's changes.
    a.elected.round(&a.control).await.expect("a's round");
    assert!(!a.elected.serving());
    assert_eq!(a.elected.leader_url().as_deref(), Some(b.url.as_str()));
    both.create("n1", None, &meta("v3"), None)
        .await
        .expect("acknowledged by B");
    b.elected.resign().await;
    assert!(!b.elected.serving());
    a.elected.round(&a.control).await.expect("a's round");
    assert!(a.elected.serving(), "a released key is free at once");
    let (mut names, _) = both.datasets().await.expect("datasets");
    names.sort_by(|x, y| x.metadata.get("name").cmp(&y.metadata.get("name")));
    assert_eq!(names.len(), 2, "{names:?}");
}

/// The adversarial order: the old holder has not noticed anything (no round, no failed write)
/// when the new one takes over and writes; its writes in flight and after are all refused by
/// Consul, and the new holder's acknowledged state is never overwritten.
#[tokio::test]
async fn a_stale_holder_writing_after_the_takeover_changes_nothing() {
    let fake = FakeAgent::start(None).await;
    let a = instance(&fake).await;
    let b = instance(&fake).await;
    a.elected.round(&a.control).await.expect("a's round");
    let to_a = ControlClient::new(&a.url, None).expect("client");
    let to_b = ControlClient::new(&b.url, None).expect("client");
    to_a.create("n1", None, &meta("from-a"), None)
        .await
        .expect("a leads");
    fake.expire_session(&a.elected.session().expect("session"));
    fake.advance(TTL);
    b.elected.round(&b.control).await.expect("b's round");
    assert!(b.elected.serving());
    assert!(
        a.elected.serving(),
        "a has not noticed: it still believes it leads"
    );
    to_b.create("n1", None, &meta("from-b"), None)
        .await
        .expect("b leads");
    // A burst from the stale holder, concurrently: not one is acknowledged.
    let writes = (0..8).map(|i| {
        let c = to_a.clone();
        async move {
            c.create("n1", None, &meta(&format!("stale-{i}")), None)
                .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        assert_eq!(r.expect_err("stale").status(), Some(503));
    }
    let stored = fake.state.lock().expect("fake").kv[KEY].value.clone();
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        stored.contains("from-a") && stored.contains("from-b"),
        "{stored}"
    );
    assert!(!stored.contains("stale-"), "{stored}");
    let (ds, _) = to_b.datasets().await.expect("b serves");
    assert_eq!(ds.len(), 2);
}

/// A Consul that cannot answer (no cluster leader) does not stop the holder before its
/// deadline, and moves the deadline no further; its writes fail meanwhile, acknowledging
/// nothing. Once Consul answers, the same session goes on.
#[tokio::test]
async fn a_consul_that_fails_leaves_the_holder_its_deadline_and_no_more() {
    let fake = FakeAgent::start(None).await;
    let a = instance(&fake).await;
    a.elected.round(&a.control).await.expect("round");
    let until = a.elected.serving_until().expect("serving");
    let sid = a.elected.session();
    fake.state.lock().expect("fake").unavailable = true;
    let e = a
        .elected
        .round(&a.control)
        .await
        .expect_err("no cluster leader");
    assert!(e.to_string().contains("No cluster leader"), "{e}");
    assert!(a.elected.serving(), "serves on within its deadline");
    assert_eq!(a.elected.serving_until(), Some(until), "not extended");
    let client = ControlClient::new(&a.url, None).expect("client");
    let e: ClientError = client
        .create("n1", None, &meta("during"), None)
        .await
        .expect_err("a write needs Consul");
    assert_eq!(e.status(), Some(500), "{e}");
    assert!(
        a.elected.serving(),
        "a write Consul did not answer is no deposition"
    );
    fake.state.lock().expect("fake").unavailable = false;
    a.elected.round(&a.control).await.expect("round");
    assert!(a.elected.serving_until() > Some(until), "renewed");
    assert_eq!(a.elected.session(), sid, "the same session");
    client
        .create("n1", None, &meta("after"), None)
        .await
        .expect("written once Consul answers");
}

/// A session Consul no longer knows stops the holder at its next round, before its deadline.
#[tokio::test]
async fn a_session_gone_stops_the_holder_at_its_next_round() {
    let fake = FakeAgent::start(None).await;
    let a = instance(&fake).await;
    a.elected.round(&a.control).await.expect("round");
    fake.expire_session(&a.elected.session().expect("session"));
    fake.advance(TTL);
    let b = instance(&fake).await;
    b.elected
        .round(&b.control)
        .await
        .expect("b takes the free key");
    a.elected.round(&a.control).await.expect("round");
    assert!(!a.elected.serving(), "the key is another's");
    assert_eq!(a.elected.leader_url().as_deref(), Some(b.url.as_str()));
}

#[test]
fn a_lock_delay_shorter_than_the_ttl_is_refused() {
    let mut c = ElectionConfig {
        key: "k".into(),
        ttl: TTL,
        lock_delay: Duration::from_secs(5),
        identity: String::new(),
    };
    let e = validate(&c).expect_err("unsafe");
    assert!(e.contains("at least the session TTL"), "{e}");
    c.lock_delay = TTL;
    validate(&c).expect("safe");
    c.ttl = Duration::from_secs(5);
    assert!(validate(&c).expect_err("Consul's bound").contains("10s"));
}
