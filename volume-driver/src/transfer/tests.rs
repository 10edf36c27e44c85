use std::sync::Arc;

use axum::response::IntoResponse;

use super::*;
use crate::backend::layout::Layout;
use berth_volume_client::error_chain::chain;

const ID: &str = "0b2c7a6e-3f1d-4d7e-9c1a-1e2f3a4b5c6d";

async fn serve_router(r: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(l, r).await });
    addr
}

async fn serve_layout(root: &Path) -> String {
    serve_router(router(Arc::new(Layout::new(root)), &opts())).await
}

fn opts() -> TransferOptions {
    TransferOptions::default()
}

/// Sets `p`'s mtime back to what `like` says, as a careless restore tool would.
fn set_mtime(p: &Path, like: &std::fs::Metadata) {
    let f = std::fs::File::options().write(true).open(p).expect("open");
    f.set_modified(like.modified().expect("mtime"))
        .expect("set mtime");
}

#[tokio::test]
async fn pull_is_verified_incremental_and_prunes() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sl = Layout::new(src.path());
    let sd = sl.data_dir(ID);
    std::fs::create_dir_all(sd.join("sub/deep")).expect("mkdir");
    std::fs::write(sd.join("a"), b"hello").expect("w");
    std::fs::write(sd.join("sub/deep/b"), vec![7u8; 100_000]).expect("w");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let dd = dl.data_dir(ID);
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!((s.copied, s.skipped, s.bytes), (2, 0, 100_005));
    assert_eq!(std::fs::read(dd.join("a")).expect("r"), b"hello");
    assert_eq!(
        manifest(&dd).expect("m"),
        manifest(&sd).expect("m"),
        "same bytes, mtimes, modes"
    );
    // Repeat: nothing copied and, with both hash caches warm, nothing read either.
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!((s.copied, s.skipped, s.hashed), (0, 2, 0));
    // Without either cache the same answer costs a hash of each local file (and the source
    // is asked for its digests).
    std::fs::remove_file(sl.hash_cache(ID)).expect("rm source cache");
    std::fs::remove_file(dl.hash_cache(ID)).expect("rm dest cache");
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!((s.copied, s.skipped, s.hashed), (0, 2, 2));
    // Change one file and add/remove others: only the change moves.
    std::fs::write(sd.join("a"), b"HELLO").expect("w");
    std::fs::remove_dir_all(sd.join("sub")).expect("rm");
    std::fs::write(dd.join("stray"), b"x").expect("w");
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!((s.copied, s.skipped, s.removed), (1, 0, 4));
    assert_eq!(manifest(&dd).expect("m"), manifest(&sd).expect("m"));
}

#[tokio::test]
async fn same_size_and_mtime_but_other_bytes_is_still_recopied() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("f"), b"original").expect("w");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    // The stale copy changes behind the agent's back, mtime put back: only its ctime tells.
    let f = dl.data_dir(ID).join("f");
    let md = std::fs::metadata(&f).expect("md");
    std::fs::write(&f, b"tampered").expect("w");
    set_mtime(&f, &md);
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(
        (s.copied, s.hashed),
        (1, 1),
        "re-hashed, found different, re-copied"
    );
    assert_eq!(std::fs::read(&f).expect("r"), b"original");
}

#[tokio::test]
async fn failure_leaves_source_intact_and_rejects_unsafe_paths() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let e = pull(&addr, ID, None, &dl, &opts())
        .await
        .expect_err("not held");
    assert!(e.to_string().contains("404"), "{e}");
    let e = pull("127.0.0.1:1", ID, None, &dl, &opts())
        .await
        .expect_err("down");
    assert!(matches!(e, TransferError::Http(_)), "{e}");
    for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(!safe_rel(bad), "{bad}");
    }
    assert!(safe_rel("a/b.c"));
}

#[tokio::test]
async fn links_are_copied_as_links_and_never_followed() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let outside = tempfile::tempdir().expect("tmp");
    std::fs::write(outside.path().join("secret"), b"s3cret").expect("w");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(sd.join("conf")).expect("mkdir");
    std::fs::write(sd.join("conf/app"), b"real").expect("w");
    std::os::unix::fs::symlink(outside.path(), sd.join("escape")).expect("link");
    // The source does not serve through a link, even when asked for it by name.
    let addr = serve_layout(src.path()).await;
    let r = berth_volume_client::http_client::send(
        &berth_volume_client::http_client::Target::Tcp(addr.clone()),
        hyper::Method::POST,
        &format!("/v1/transfer/{ID}/stream"),
        &[],
        br#"["escape/secret"]"#.to_vec(),
    )
    .await
    .expect("reply");
    assert!(
        !r.body.windows(6).any(|w| w == b"s3cret"),
        "served a file outside the dataset"
    );
    assert!(String::from_utf8_lossy(&r.body).contains("not a directory"));
    // A link on the receiving side where the source has a directory is replaced, not followed.
    let dl = Layout::new(dst.path());
    std::fs::create_dir_all(dl.data_dir(ID)).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), dl.data_dir(ID).join("conf")).expect("link");
    pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert!(!outside.path().join("app").exists(), "wrote through a link");
    assert_eq!(
        std::fs::read(dl.data_dir(ID).join("conf/app")).expect("r"),
        b"real"
    );
    // Links are copied as links, their targets untouched and unread.
    assert_eq!(
        std::fs::read_link(dl.data_dir(ID).join("escape")).expect("a link"),
        outside.path()
    );
    assert_eq!(
        scan(&dl.data_dir(ID), None).expect("m"),
        scan(&sd, None).expect("m")
    );
    // A link retargeted, and one where the source now has a directory, are both redone.
    std::fs::remove_file(sd.join("escape")).expect("rm");
    std::os::unix::fs::symlink("conf/app", sd.join("escape")).expect("link");
    std::fs::remove_dir_all(sd.join("conf")).expect("rm");
    std::os::unix::fs::symlink("elsewhere", sd.join("conf")).expect("link");
    pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(
        scan(&dl.data_dir(ID), None).expect("m"),
        scan(&sd, None).expect("m")
    );
    assert!(!outside.path().join("app").exists());
}

#[tokio::test]
async fn a_stream_cut_mid_file_resumes_without_recopying() {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::middleware::{self, Next};
    use http_body_util::BodyExt;
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    for f in ["a", "b", "c"] {
        std::fs::write(sd.join(f), f.repeat(10_000)).expect("w");
    }
    let before = manifest(&sd).expect("m");
    // A source that dies 5000 bytes before the end of its stream: in the middle of file c.
    let r = router(Arc::new(Layout::new(src.path())), &opts()).layer(middleware::from_fn(
        |req: Request, next: Next| async move {
            let streaming = req.uri().path().ends_with("/stream");
            let resp = next.run(req).await;
            if !streaming {
                return resp;
            }
            let (parts, body) = resp.into_parts();
            let all = body.collect().await.expect("body").to_bytes();
            let cut = all.slice(..all.len() - 5000);
            // The head and the first bytes go out; then the process "dies".
            let body = Body::from_stream(futures_util::stream::unfold(0, move |n| {
                let cut = cut.clone();
                async move {
                    match n {
                        0 => Some((Ok(cut), 1)),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("source died")), 2))
                        }
                        _ => None,
                    }
                }
            }));
            axum::response::Response::from_parts(parts, body).into_response()
        },
    ));
    let flaky = serve_router(r).await;
    let dl = Layout::new(dst.path());
    let dd = dl.data_dir(ID);
    let e = pull(&flaky, ID, None, &dl, &opts())
        .await
        .expect_err("source fails mid-way");
    assert!(matches!(e, TransferError::Stream(_)), "{}", chain(&e));
    assert_eq!(
        std::fs::read(dd.join("a")).expect("a landed"),
        "a".repeat(10_000).as_bytes()
    );
    assert!(!dd.join("c").exists(), "no half file in place");
    assert!(
        dd.join(".berth-partial").exists(),
        "the torn temp file is all that is left"
    );
    assert_eq!(manifest(&sd).expect("m"), before, "source intact");
    let good = serve_layout(src.path()).await;
    let s = pull(&good, ID, None, &dl, &opts()).await.expect("resume");
    assert_eq!(
        (s.copied, s.skipped, s.hashed),
        (1, 2, 2),
        "resumed: a and b verified by hash, only c moves"
    );
    assert_eq!(manifest(&dd).expect("m"), before);
    assert!(!dd.join(".berth-partial").exists(), "no temp file left");
}

#[tokio::test]
async fn a_rate_limit_bounds_throughput() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("f"), vec![1u8; 1 << 20]).expect("w");
    let addr = serve_layout(src.path()).await;
    let t = std::time::Instant::now();
    let o = TransferOptions {
        rate_limit: Some(4 << 20),
        ..TransferOptions::default()
    };
    pull(&addr, ID, None, &Layout::new(dst.path()), &o)
        .await
        .expect("pull");
    // 1 MiB at 4 MiB/s cannot take less than a quarter second, however fast the machine.
    assert!(t.elapsed() >= std::time::Duration::from_millis(240));
}

#[tokio::test]
async fn a_copy_that_is_not_the_newest_is_never_a_source() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sl = Layout::new(src.path());
    std::fs::create_dir_all(sl.data_dir(ID)).expect("mkdir");
    std::fs::write(sl.data_dir(ID).join("f"), b"partial").expect("w");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    // The source never finished a copy (no epoch): refused, and nothing lands.
    let e = pull(&addr, ID, Some(2), &dl, &opts())
        .await
        .expect_err("incomplete source");
    assert!(e.to_string().contains("not the newest copy"), "{e}");
    assert!(!dl.data_dir(ID).join("f").exists());
    sl.set_epoch(ID, 1).expect("epoch");
    let e = pull(&addr, ID, Some(2), &dl, &opts())
        .await
        .expect_err("older copy");
    assert!(
        matches!(
            e,
            TransferError::NotNewest {
                have: Some(1),
                want: 2
            }
        ),
        "{e}"
    );
    sl.set_epoch(ID, 2).expect("epoch");
    pull(&addr, ID, Some(2), &dl, &opts())
        .await
        .expect("the copy of epoch 2");
}

#[tokio::test]
async fn a_token_guarded_source_serves_only_its_holders() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("f"), b"secret data").expect("w");
    let guarded = TransferOptions {
        token: Some("s3".into()),
        ..opts()
    };
    let r = router(Arc::new(Layout::new(src.path())), &guarded);
    let addr = serve_router(r).await;
    let dl = Layout::new(dst.path());
    let e = pull(&addr, ID, None, &dl, &opts())
        .await
        .expect_err("no token");
    assert!(e.to_string().contains("401"), "{e}");
    let wrong = TransferOptions {
        token: Some("guess".into()),
        ..opts()
    };
    let e = pull(&addr, ID, None, &dl, &wrong).await.expect_err("wrong");
    assert!(e.to_string().contains("401"), "{e}");
    let right = TransferOptions {
        token: Some("s3".into()),
        ..opts()
    };
    pull(&addr, ID, None, &dl, &right).await.expect("holder");
    assert_eq!(
        std::fs::read(dl.data_dir(ID).join("f")).expect("r"),
        b"secret data"
    );
}

#[tokio::test]
async fn bytes_that_no_longer_match_the_sources_record_are_refused() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sl = Layout::new(src.path());
    let sd = sl.data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("f"), b"what was written").expect("w");
    // The source recorded a digest for the file as it stands, but the bytes on disk no longer
    // hash to it (bit rot, or a write that bypassed the file system): the move must not
    // propagate them silently.
    let mut c = HashCache::load(&sl.hash_cache(ID));
    let key = StatKey::of(&std::fs::metadata(sd.join("f")).expect("md"));
    c.put(
        "f",
        key,
        blake3::hash(b"what was recorded").to_hex().to_string(),
    );
    c.save().expect("save");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let e = pull(&addr, ID, None, &dl, &opts())
        .await
        .expect_err("mismatch");
    assert!(
        matches!(&e, TransferError::Checksum { path, .. } if path == "f"),
        "{}",
        chain(&e)
    );
    assert!(
        !dl.data_dir(ID).join("f").exists(),
        "nothing unverified in place"
    );
}

#[tokio::test]
async fn a_mode_change_moves_no_bytes_and_keeps_the_cache_warm() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("run.sh"), b"#!/bin/sh\n").expect("w");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    std::fs::set_permissions(sd.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(
        (s.copied, s.skipped),
        (0, 1),
        "same bytes: only the mode changes"
    );
    let md = std::fs::metadata(dl.data_dir(ID).join("run.sh")).expect("md");
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(s.hashed, 0, "the chmod did not cost a later re-hash");
}

#[tokio::test]
async fn a_copy_keeps_its_owners_and_directory_modes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root to give files away (CI=true: a test that did not run must not pass)"
        );
        eprintln!("NOT RUN: a_copy_keeps_its_owners_and_directory_modes needs root");
        return;
    }
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(sd.join("base")).expect("mkdir");
    std::fs::write(sd.join("base/1"), b"page").expect("w");
    std::fs::write(sd.join("PG_VERSION"), b"15\n").expect("w");
    // PostgreSQL's data directory: its own user's, 0700, or it will not start.
    for (p, owner) in [("", 70), ("base", 71), ("base/1", 72), ("PG_VERSION", 70)] {
        chown(sd.join(p), Some(owner), Some(owner + 100)).expect("chown");
    }
    std::fs::set_permissions(&sd, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(sd.join("base"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let dd = dl.data_dir(ID);
    pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    let owned = |p: &str| {
        let md = std::fs::symlink_metadata(dd.join(p)).expect("md");
        (md.uid(), md.gid(), md.mode() & 0o7777)
    };
    assert_eq!(owned(""), (70, 170, 0o700), "the root");
    assert_eq!(owned("base"), (71, 171, 0o750), "a directory");
    assert_eq!(owned("base/1").0, 72, "a file");
    assert_eq!(owned("PG_VERSION").0, 70, "a file");

    // An owner changed alone moves no bytes and costs no later re-hash.
    chown(sd.join("PG_VERSION"), Some(80), Some(180)).expect("chown");
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(
        (s.copied, s.skipped),
        (0, 2),
        "same bytes: only the owner changes"
    );
    assert_eq!(owned("PG_VERSION").0, 80);
    let s = pull(&addr, ID, None, &dl, &opts()).await.expect("pull");
    assert_eq!(s.hashed, 0, "the chown did not cost a later re-hash");
}

#[tokio::test]
async fn a_manifest_naming_an_owner_for_a_directory_it_does_not_list_is_refused() {
    // A hostile or broken source: an owner for a path outside the listed directories would
    // otherwise give away whatever the agent can reach.
    let evil = serde_json::json!({
        "dirs": ["a"],
        "files": [],
        "dir_meta": [{"path": "../../etc", "mode": 0o777, "owner": {"uid": 65534, "gid": 65534}}]
    });
    let r = axum::Router::new().route(
        "/v1/transfer/{id}/manifest",
        axum::routing::get(move || {
            let evil = evil.clone();
            async move { axum::Json(evil) }
        }),
    );
    let addr = serve_router(r).await;
    let dst = tempfile::tempdir().expect("tmp");
    let e = pull(&addr, ID, None, &Layout::new(dst.path()), &opts())
        .await
        .expect_err("refused");
    assert!(
        matches!(e, TransferError::UnsafePath(ref p) if p == "../../etc"),
        "{e}"
    );
}

/// A source that accepted the connection and then went silent (a node that lost power keeps
/// its peers' connections open): a cancelled pull stops waiting for it.
#[tokio::test]
async fn a_cancelled_pull_stops_waiting_for_a_silent_source() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            conns.push(c);
        }
    });
    let dst = tempfile::tempdir().expect("tmp");
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let layout = Layout::new(dst.path());
    let o = opts();
    let cancel = async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let p = pull_until(&addr, ID, None, &layout, &o, cancel);
    tokio::pin!(p);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut p)
            .await
            .is_err(),
        "the silent source answered?"
    );
    tx.send(true).expect("cancel");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), p)
        .await
        .expect("a cancelled pull returns");
    assert!(matches!(r, Err(TransferError::Cancelled)), "{r:?}");
    held.abort();
}

/// Cancelled mid-stream: the pull returns, nothing more lands afterwards, what landed is whole,
/// its partial files can be removed, and a later pull completes the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cancelled_mid_stream_writes_nothing_more() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    for i in 0..8u8 {
        std::fs::write(sd.join(format!("f{i}")), vec![i; 256 << 10]).expect("w");
    }
    let slow = TransferOptions {
        rate_limit: Some(1 << 20),
        ..opts()
    };
    let addr = serve_router(router(Arc::new(Layout::new(src.path())), &slow)).await;
    let dl = Layout::new(dst.path());
    let dd = dl.data_dir(ID);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = {
        let (addr, dl) = (addr.clone(), dl.clone());
        tokio::spawn(async move {
            let cancel = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            pull_until(&addr, ID, None, &dl, &opts(), cancel).await
        })
    };
    let landed = |d: &Path| (0..8).filter(|i| d.join(format!("f{i}")).exists()).count();
    let t = std::time::Instant::now();
    while landed(&dd) == 0 {
        assert!(t.elapsed().as_secs() < 30, "nothing landed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tx.send(true).expect("cancel");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("returns")
        .expect("task");
    assert!(matches!(r, Err(TransferError::Cancelled)), "{r:?}");
    let after = landed(&dd);
    assert!(after < 8, "the whole copy landed: nothing was cancelled");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(landed(&dd), after, "a file landed after the pull returned");
    for i in 0..8u8 {
        if let Ok(b) = std::fs::read(dd.join(format!("f{i}"))) {
            assert_eq!(b, vec![i; 256 << 10], "f{i} landed torn");
        }
    }
    remove_partials(&dd).expect("remove partials");
    assert!(
        std::fs::read_dir(&dd)
            .expect("dir")
            .filter_map(Result::ok)
            .all(|e| !e
                .file_name()
                .to_string_lossy()
                .starts_with(".berth-partial")),
        "a partial file is left"
    );
    pull(&addr, ID, None, &dl, &opts()).await.expect("resume");
    assert_eq!(manifest(&dd).expect("m"), manifest(&sd).expect("m"));
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in `dir`: (ca, cert, key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn a_pull_over_tls_trusts_the_cluster_ca_only() {
    use berth_volume_client::tls;
    let pki = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = test_pki(pki.path());
    let src = tempfile::tempdir().expect("tmp");
    let sd = Layout::new(src.path()).data_dir(ID);
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(sd.join("f"), b"over tls").expect("w");
    let acceptor = tls::server(Some(&cert), Some(&key))
        .expect("tls")
        .expect("given");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let r = router(Arc::new(Layout::new(src.path())), &opts());
    tokio::spawn(tls::serve(l, acceptor, r, std::future::pending()));

    let trusted = TransferOptions {
        peer_tls: Some(tls::ClientTls::new(Some(&ca)).expect("ca")),
        ..opts()
    };
    let dst = tempfile::tempdir().expect("tmp");
    let dl = Layout::new(dst.path());
    pull(&addr, ID, None, &dl, &trusted)
        .await
        .expect("pull over tls");
    assert_eq!(
        std::fs::read(dl.data_dir(ID).join("f")).expect("r"),
        b"over tls"
    );

    let other = tempfile::tempdir().expect("tmp");
    let untrusted = TransferOptions {
        peer_tls: Some(tls::ClientTls::new(None).expect("system roots")),
        ..opts()
    };
    let e = pull(&addr, ID, None, &Layout::new(other.path()), &untrusted)
        .await
        .expect_err("unknown CA");
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    let e = pull(&addr, ID, None, &Layout::new(other.path()), &opts())
        .await
        .expect_err("plain http to a TLS port");
    assert!(e.to_string().contains("unreachable"), "{e}");
}
