//! Contract tests against the documented-shapes fake of a Consul agent
//! (`berth-consul-fake`): every write is one `PUT /v1/txn` with a `cas` on the ModifyIndex last
//! read or written, and, once fenced, a `check-session` on the leader key first.

use std::time::Duration;

use berth_consul::Consul;
use berth_consul_fake::FakeAgent;

use super::*;

fn txn_bodies(fake: &FakeAgent) -> Vec<serde_json::Value> {
    let st = fake.state.lock().expect("fake state");
    st.requests
        .iter()
        .filter(|r| r.path == "/v1/txn")
        .map(|r| r.body.clone())
        .collect()
}

#[tokio::test]
async fn cas_on_modify_index_against_the_documented_shapes() {
    let fake = FakeAgent::start(None).await;
    let a = ConsulStore::new(&fake.url).expect("client");
    assert_eq!(a.load().await.expect("load"), None, "404 means empty");
    a.save(br#"{"generation":1}"#)
        .await
        .expect("create with cas=0");
    let b = ConsulStore::new(&fake.url).expect("client");
    assert_eq!(
        b.load().await.expect("load").as_deref(),
        Some(&br#"{"generation":1}"#[..])
    );
    b.save(br#"{"generation":2}"#)
        .await
        .expect("b writes at the index it read");
    let e = a
        .save(br#"{"generation":99}"#)
        .await
        .expect_err("a's index is stale");
    assert!(e.to_string().contains("check-and-set"), "{e}");
    let txns = txn_bodies(&fake);
    assert_eq!(txns.len(), 3, "{txns:?}");
    let op = |i: usize| txns[i][0]["KV"].clone();
    assert_eq!(op(0)["Verb"], "cas");
    assert_eq!(op(0)["Key"], KEY);
    assert_eq!(op(0)["Index"], 0, "first write is create-only");
    assert_ne!(
        op(1)["Index"],
        0,
        "b's write carries the ModifyIndex it read"
    );
    assert_eq!(
        op(2)["Index"],
        op(1)["Index"],
        "a sends the index its own write made, which b's has since superseded"
    );
    assert_eq!(
        b.load().await.expect("load").as_deref(),
        Some(&br#"{"generation":2}"#[..]),
        "the loser changed nothing"
    );
    // The index a write made comes from the transaction's answer: b writes on.
    b.save(br#"{"generation":3}"#).await.expect("b again");
}

#[tokio::test]
async fn a_fenced_write_needs_the_session_to_hold_the_key() {
    let fake = FakeAgent::start(None).await;
    let consul = Consul::new(&fake.url, None, Duration::from_secs(5)).expect("client");
    let sid = consul
        .create_session("t", Duration::from_secs(10), Duration::from_secs(10))
        .await
        .expect("session");
    assert!(consul.acquire("lead", &sid, b"me").await.expect("acquire"));
    let s = ConsulStore::new(&fake.url).expect("client");
    s.fence_with("lead", &sid);
    s.save(br#"{"generation":1}"#).await.expect("held: written");
    let t = txn_bodies(&fake);
    assert_eq!(t[0][0]["KV"]["Verb"], "check-session");
    assert_eq!(t[0][0]["KV"]["Key"], "lead");
    assert_eq!(t[0][0]["KV"]["Session"], sid.as_str());
    assert_eq!(t[0][1]["KV"]["Verb"], "cas");
    fake.expire_session(&sid);
    let e = s
        .save(br#"{"generation":2}"#)
        .await
        .expect_err("the session is gone");
    assert!(matches!(e, StoreError::NotLeader), "{e}");
    assert_eq!(
        s.load().await.expect("load").as_deref(),
        Some(&br#"{"generation":1}"#[..]),
        "nothing of the refused write"
    );
}

/// The control service's writer thread saves through this store, awaiting it on the test's
/// runtime: a change acknowledged over HTTP is in Consul. A current-thread runtime (the
/// default of `#[tokio::test]`), on which the former bridge, `block_in_place`, panics (as
/// tokio documents it).
#[tokio::test]
async fn the_control_service_commits_through_consul() {
    let fake = FakeAgent::start(None).await;
    let store = ConsulStore::new(&fake.url).expect("client");
    let c = std::sync::Arc::new(
        crate::api::Control::open(Box::new(store), None)
            .await
            .expect("open"),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(crate::api::serve(l, c, std::future::pending()));
    let client = berth_volume_client::ControlClient::new(&url, None).expect("client");
    let meta = [(
        berth_control_model::options::META_NAME.to_string(),
        "v".to_string(),
    )]
    .into();
    client
        .create("n1", None, &meta, None)
        .await
        .expect("create acknowledged");
    let txns = txn_bodies(&fake);
    assert_eq!(txns.len(), 1, "{txns:?}");
    let stored = fake.state.lock().expect("fake").kv[KEY].value.clone();
    assert!(
        String::from_utf8_lossy(&stored).contains(r#""name":"v""#),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}
