use super::*;

async fn serve_layout(root: &Path) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let r = router(Arc::new(Layout::new(root)));
    tokio::spawn(async move { axum::serve(l, r).await });
    addr
}

#[tokio::test]
async fn pull_is_verified_incremental_and_prunes() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let id = "0b2c7a6e-3f1d-4d7e-9c1a-1e2f3a4b5c6d";
    let sl = Layout::new(src.path());
    let sd = sl.data_dir(id);
    std::fs::create_dir_all(sd.join("sub/deep")).expect("mkdir");
    std::fs::write(sd.join("a"), b"hello").expect("w");
    std::fs::write(sd.join("sub/deep/b"), vec![7u8; 100_000]).expect("w");
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let (dd, work) = (dl.data_dir(id), dl.work_dir(id));
    let s = pull(&addr, id, &dd, &work).await.expect("pull");
    assert_eq!((s.copied, s.skipped), (2, 0));
    assert_eq!(std::fs::read(dd.join("a")).expect("r"), b"hello");
    assert_eq!(
        manifest(&dd).expect("m"),
        manifest(&sd).expect("m"),
        "same bytes, mtimes, modes"
    );
    // Repeat: nothing copied. Change one file and add/remove others: only the change moves.
    let s = pull(&addr, id, &dd, &work).await.expect("pull");
    assert_eq!((s.copied, s.skipped), (0, 2));
    std::fs::write(sd.join("a"), b"HELLO").expect("w");
    std::fs::remove_dir_all(sd.join("sub")).expect("rm");
    std::fs::write(dd.join("stray"), b"x").expect("w");
    let s = pull(&addr, id, &dd, &work).await.expect("pull");
    assert_eq!((s.copied, s.skipped), (1, 0));
    assert_eq!(manifest(&dd).expect("m"), manifest(&sd).expect("m"));
}

#[tokio::test]
async fn failure_leaves_source_intact_and_rejects_unsafe_paths() {
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let id = "0b2c7a6e-3f1d-4d7e-9c1a-1e2f3a4b5c6d";
    let addr = serve_layout(src.path()).await;
    let dl = Layout::new(dst.path());
    let e = pull(&addr, id, &dl.data_dir(id), &dl.work_dir(id))
        .await
        .expect_err("not held");
    assert!(e.to_string().contains("404"), "{e}");
    let e = pull("127.0.0.1:1", id, &dl.data_dir(id), &dl.work_dir(id))
        .await
        .expect_err("down");
    assert!(matches!(e, TransferError::Http(_)), "{e}");
    for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(!safe_rel(bad), "{bad}");
    }
    assert!(safe_rel("a/b.c"));
}

#[tokio::test]
async fn interrupted_pull_resumes_without_recopying() {
    use axum::extract::Request;
    use axum::middleware::{self, Next};
    let src = tempfile::tempdir().expect("tmp");
    let dst = tempfile::tempdir().expect("tmp");
    let id = "0b2c7a6e-3f1d-4d7e-9c1a-1e2f3a4b5c6d";
    let sd = Layout::new(src.path()).data_dir(id);
    std::fs::create_dir_all(&sd).expect("mkdir");
    for f in ["a", "b", "c"] {
        std::fs::write(sd.join(f), f.repeat(10_000)).expect("w");
    }
    let before = manifest(&sd).expect("m");
    // A source that dies on file "c": the pull stops after a and b landed whole.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let flaky = l.local_addr().expect("addr").to_string();
    let r = router(Arc::new(Layout::new(src.path()))).layer(middleware::from_fn(
        |req: Request, next: Next| async move {
            if req.uri().query().is_some_and(|q| q.contains("path=c")) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            next.run(req).await
        },
    ));
    tokio::spawn(async move { axum::serve(l, r).await });
    let dl = Layout::new(dst.path());
    let (dd, work) = (dl.data_dir(id), dl.work_dir(id));
    let e = pull(&flaky, id, &dd, &work)
        .await
        .expect_err("source fails mid-way");
    assert!(e.to_string().contains("500"), "{e}");
    assert_eq!(
        std::fs::read(dd.join("a")).expect("a landed"),
        "a".repeat(10_000).as_bytes()
    );
    assert!(!dd.join("c").exists(), "no half file in place");
    assert_eq!(manifest(&sd).expect("m"), before, "source intact");
    let good = serve_layout(src.path()).await;
    let s = pull(&good, id, &dd, &work).await.expect("resume");
    assert_eq!((s.copied, s.skipped), (1, 2), "resumed: only c moves");
    assert_eq!(manifest(&dd).expect("m"), before);
}
