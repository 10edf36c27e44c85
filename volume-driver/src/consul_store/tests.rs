//! Contract tests: a tiny HTTP server playing Consul's documented KV API
//! (`GET /v1/kv/<key>` → `[{Key, Value(base64), ModifyIndex, …}]` or 404;
//! `PUT /v1/kv/<key>?cas=<index>` → `true`/`false`), asserting what the store sends.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::*;

#[derive(Default)]
struct Kv {
    value: Option<Vec<u8>>,
    index: u64,
    puts: Vec<(Option<String>, String)>,
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[derive(serde::Deserialize)]
struct PutQuery {
    cas: Option<String>,
}

async fn fake_consul() -> (String, Arc<Mutex<Kv>>) {
    let kv = Arc::new(Mutex::new(Kv::default()));
    let app = Router::new()
        .route(
            &format!("/v1/kv/{KEY}"),
            get(|State(kv): State<Arc<Mutex<Kv>>>| async move {
                let kv = kv.lock().expect("kv");
                match &kv.value {
                    None => StatusCode::NOT_FOUND.into_response(),
                    Some(v) => axum::Json(serde_json::json!([{
                        "LockIndex": 0, "Key": KEY, "Flags": 0, "Value": b64(v),
                        "CreateIndex": 1, "ModifyIndex": kv.index
                    }]))
                    .into_response(),
                }
            })
            .put(|State(kv): State<Arc<Mutex<Kv>>>, Query(q): Query<PutQuery>, body: Bytes| async move {
                let mut kv = kv.lock().expect("kv");
                kv.puts.push((q.cas.clone(), String::from_utf8_lossy(&body).into_owned()));
                let ok = q.cas.as_deref().is_none_or(|c| c.parse::<u64>().ok() == Some(kv.index));
                if ok {
                    kv.value = Some(body.to_vec());
                    kv.index += 10;
                }
                axum::Json(ok).into_response()
            }),
        )
        .with_state(kv.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, kv)
}

#[tokio::test]
async fn cas_on_modify_index_against_the_documented_shapes() {
    let (addr, kv) = fake_consul().await;
    let a = ConsulStore::new(&addr).expect("client");
    assert_eq!(a.load().await.expect("load"), None, "404 means empty");
    a.save(br#"{"generation":1}"#)
        .await
        .expect("create with cas=0");
    let b = ConsulStore::new(&addr).expect("client");
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
    let puts = kv.lock().expect("kv").puts.clone();
    assert_eq!(
        puts[0].0.as_deref(),
        Some("0"),
        "first write is create-only (cas=0)"
    );
    assert_eq!(
        puts[1].0.as_deref(),
        Some("10"),
        "second write carries the ModifyIndex it read"
    );
    assert_eq!(
        puts[2].0.as_deref(),
        Some("10"),
        "stale writer sends its stale index"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&puts[1].1).expect("json body")["generation"],
        2
    );
    assert_eq!(
        b.load().await.expect("load").as_deref(),
        Some(&br#"{"generation":2}"#[..]),
        "loser changed nothing"
    );
}

/// The control service's writer thread saves through this store, awaiting it on the test's
/// runtime: a change acknowledged over HTTP is in Consul. A current-thread runtime (the
/// default of `#[tokio::test]`), on which the former bridge, `block_in_place`, panics (as
/// tokio documents it).
#[tokio::test]
async fn the_control_service_commits_through_consul() {
    let (addr, kv) = fake_consul().await;
    let store = ConsulStore::new(&addr).expect("client");
    let c = std::sync::Arc::new(
        crate::control::api::Control::open(Box::new(store), None)
            .await
            .expect("open"),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(crate::control::api::serve(l, c, std::future::pending()));
    let client = crate::client::ControlClient::new(&url, None).expect("client");
    let meta = [(crate::options::META_NAME.to_string(), "v".to_string())].into();
    client
        .create("n1", None, &meta, None)
        .await
        .expect("create acknowledged");
    let puts = kv.lock().expect("kv").puts.clone();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(puts[0].1.contains(r#""name":"v""#), "{}", puts[0].1);
}
