//! Contract tests of the leader election against [`FakeAgent`], which answers in Consul's
//! documented session and KV shapes. Each test drives the rounds itself: no timer decides.

use std::sync::Arc;
use std::time::Duration;

use berth_consul::Consul;
use berth_leadership::{Leadership, LockError};

use super::Agent;
use super::election::{ElectionConfig, Elector, elector as new_elector};
use super::fake::FakeAgent;

const KEY: &str = "berth/leader";
const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_secs(15);

fn elector(fake: &FakeAgent, name: &str) -> (Elector, Arc<Leadership>) {
    let consul =
        Consul::new(&fake.url, Some("t0k3n".into()), Duration::from_secs(5)).expect("agent");
    let config = ElectionConfig {
        key: KEY.into(),
        ttl: TTL,
        lock_delay: LOCK_DELAY,
        identity: name.into(),
    };
    config.validate().expect("valid");
    new_elector(consul, config)
}

async fn fake() -> FakeAgent {
    FakeAgent::start(Some("t0k3n")).await
}

#[tokio::test]
async fn two_electors_one_leader_and_the_standby_knows_who() {
    let fake = fake().await;
    let (mut a, la) = elector(&fake, "m1");
    let (mut b, lb) = elector(&fake, "m2");
    for _ in 0..3 {
        a.round().await.expect("a round");
        b.round().await.expect("b round");
        assert!(la.is_leader());
        assert!(!lb.is_leader());
    }
    assert_eq!(lb.view().holder.as_deref(), Some("m1"));
    let st = fake.state.lock().unwrap();
    assert_eq!(st.holder(KEY), a.lock().session());
    assert_eq!(st.kv[KEY].value, b"m1");
    assert_eq!(
        st.kv[KEY].lock_index, 1,
        "re-acquiring a held lock takes it once"
    );
    // What Consul was asked for: a session of the TTL, releasing its locks, with the lock-delay.
    let create = st
        .requests
        .iter()
        .find(|r| r.path == "/v1/session/create")
        .expect("a session was created");
    assert_eq!(create.method, "PUT");
    assert_eq!(create.body["TTL"], "10s");
    assert_eq!(create.body["Behavior"], "release");
    assert_eq!(create.body["LockDelay"], "15000ms");
    assert!(
        st.requests
            .iter()
            .all(|r| r.token.as_deref() == Some("t0k3n"))
    );
    let renewals = st
        .requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/v1/session/renew/"))
        .count();
    assert_eq!(
        renewals, 4,
        "every round after the first renews, both daemons"
    );
}

#[tokio::test]
async fn a_leader_whose_session_expires_is_replaced_once_the_lock_delay_ran_out() {
    let fake = fake().await;
    let (mut a, la) = elector(&fake, "m1");
    let (mut b, lb) = elector(&fake, "m2");
    a.round().await.unwrap();
    b.round().await.unwrap();
    let old = a.lock().session().unwrap().to_string();
    fake.expire_session(&old);
    // Both see the key free, but the lock-delay keeps it: nobody leads yet.
    a.round().await.unwrap();
    b.round().await.unwrap();
    assert!(!la.is_leader(), "the renewal's 404 stops the old leader");
    assert_ne!(
        a.lock().session(),
        Some(old.as_str()),
        "a new session replaces the lost one"
    );
    assert!(!lb.is_leader(), "the lock-delay holds the standby off");
    fake.advance(LOCK_DELAY - Duration::from_millis(1));
    b.round().await.unwrap();
    assert!(!lb.is_leader());
    fake.advance(Duration::from_millis(1));
    b.round().await.unwrap();
    a.round().await.unwrap();
    assert!(lb.is_leader(), "the standby takes over");
    assert!(!la.is_leader());
    assert_eq!(la.view().holder.as_deref(), Some("m2"));
}

#[tokio::test]
async fn a_leader_session_destroyed_by_someone_else_is_an_expiry() {
    let fake = fake().await;
    let (mut a, la) = elector(&fake, "m1");
    let (mut b, lb) = elector(&fake, "m2");
    a.round().await.unwrap();
    b.round().await.unwrap();
    // An operator's `consul session destroy`, through the documented endpoint.
    let operator = Agent::new(&fake.url, Some("t0k3n".into()), Duration::from_secs(5)).unwrap();
    operator
        .consul()
        .destroy_session(a.lock().session().unwrap())
        .await
        .unwrap();
    b.round().await.unwrap();
    assert!(!lb.is_leader(), "lock-delay");
    fake.advance(LOCK_DELAY);
    b.round().await.unwrap();
    a.round().await.unwrap();
    assert!(lb.is_leader());
    assert!(!la.is_leader());
}

#[tokio::test]
async fn a_resigning_leader_releases_and_the_standby_takes_over_without_lock_delay() {
    let fake = fake().await;
    let (mut a, la) = elector(&fake, "m1");
    let (mut b, lb) = elector(&fake, "m2");
    a.round().await.unwrap();
    b.round().await.unwrap();
    let old = a.lock().session().unwrap().to_string();
    a.resign().await;
    assert!(!la.is_leader());
    {
        let st = fake.state.lock().unwrap();
        assert!(!st.sessions.contains_key(&old), "session destroyed");
        let at = |want: &dyn Fn(&super::fake::Request) -> bool| st.requests.iter().position(want);
        let release =
            at(&|r| r.path == "/v1/kv/berth/leader" && r.query == format!("release={old}"))
                .expect("the key was released");
        let destroy = at(&|r| r.path == format!("/v1/session/destroy/{old}"))
            .expect("the session was destroyed");
        assert!(release < destroy, "released before the session ends");
    }
    b.round().await.unwrap();
    assert!(lb.is_leader(), "no lock-delay after a release");
}

#[tokio::test]
async fn a_failed_renewal_steps_the_leader_down_at_once_and_a_good_one_restores_it() {
    let fake = fake().await;
    let (mut a, la) = elector(&fake, "m1");
    let (mut b, lb) = elector(&fake, "m2");
    a.round().await.unwrap();
    b.round().await.unwrap();
    assert!(la.is_leader());
    fake.state.lock().unwrap().unavailable = true;
    let err = a.round().await.expect_err("Consul has no leader");
    assert!(
        matches!(&err, LockError::Unavailable(m) if m.contains("500")),
        "a 500 other than `invalid session` is no dead session: {err}"
    );
    assert!(!la.is_leader(), "stops acting at the first failed renewal");
    assert!(la.view().error.unwrap().contains("No cluster leader"));
    assert!(b.round().await.is_err());
    assert!(!lb.is_leader());
    fake.state.lock().unwrap().unavailable = false;
    // The session outlived the outage (as it does when the outage is shorter than its TTL):
    // the same session still holds the key, and the old leader leads again.
    let session = a.lock().session().unwrap().to_string();
    a.round().await.unwrap();
    b.round().await.unwrap();
    assert!(la.is_leader());
    assert!(!lb.is_leader());
    assert_eq!(a.lock().session(), Some(session.as_str()));
}

#[tokio::test]
async fn without_the_token_nobody_leads() {
    let fake = fake().await;
    let consul = Consul::new(&fake.url, None, Duration::from_secs(5)).unwrap();
    let (mut e, leadership) = new_elector(
        consul,
        ElectionConfig {
            key: KEY.into(),
            ttl: TTL,
            lock_delay: LOCK_DELAY,
            identity: "m1".into(),
        },
    );
    let err = e.round().await.expect_err("403");
    assert!(
        matches!(&err, LockError::Unavailable(m) if m.contains("403")),
        "{err}"
    );
    assert!(!leadership.is_leader());
}

#[test]
fn consul_bounds_are_checked_before_any_call() {
    let ok = ElectionConfig {
        key: KEY.into(),
        ttl: TTL,
        lock_delay: LOCK_DELAY,
        identity: "m1".into(),
    };
    assert!(ok.validate().is_ok());
    assert_eq!(
        ok.interval(),
        Duration::from_millis(3333) + Duration::from_nanos(333_333)
    );
    let bad = |f: fn(&mut ElectionConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        c.validate().is_err()
    };
    assert!(bad(|c| c.ttl = Duration::from_secs(5)));
    assert!(bad(|c| c.ttl = Duration::from_millis(10_500)));
    assert!(bad(|c| c.lock_delay = Duration::from_secs(61)));
    assert!(bad(|c| c.key = "/berth/leader".into()));
}
