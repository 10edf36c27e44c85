//! TLS on the control service (`--tls-cert`, `--tls-key`) and the config file (`--config`), on
//! the real binary; the certificates are made here (rcgen), a private CA and a server
//! certificate for 127.0.0.1 and localhost.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_volume_client::ControlClient;
use berth_volume_client::http_client::{self, Target};
use berth_volume_client::tls::ClientTls;

use crate::support::{BIN, ControlSvc, free_port};

pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM files.
pub fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tmp");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        _dir: dir,
    }
}

fn tls_control(state: &Path, pki: &Pki) -> ControlSvc {
    ControlSvc::start_with(
        state,
        None,
        format!("127.0.0.1:{}", free_port()),
        &[
            "--tls-cert",
            pki.cert.to_str().expect("utf-8"),
            "--tls-key",
            pki.key.to_str().expect("utf-8"),
        ],
    )
}

#[test]
fn control_over_tls_answers_a_client_trusting_its_ca_only() {
    let pki = pki();
    let state = tempfile::tempdir().expect("tmp");
    let svc = tls_control(state.path(), &pki);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let trusted = ClientTls::new(Some(&pki.ca)).expect("ca");
        let r = http_client::send(
            &Target::Tls(svc.addr.clone(), trusted),
            hyper::Method::GET,
            "/v1/version",
            &[],
            vec![],
        )
        .await
        .expect("https with the CA");
        assert!(r.status.is_success(), "{:?}", r.status);

        let url = format!("https://{}", svc.addr);
        let client = ControlClient::with_ca(&url, None, Some(&pki.ca)).expect("client");
        assert!(client.nodes().await.expect("nodes over https").is_empty());

        // The system's roots do not include the test's CA.
        let untrusted = ControlClient::with_ca(&url, None, None).expect("client");
        let e = untrusted.nodes().await.expect_err("an unknown CA");
        let chain = berth_volume_client::error_chain::chain(&e);
        assert!(chain.contains("invalid peer certificate"), "{chain}");
        assert!(chain.contains("UnknownIssuer"), "{chain}");

        // Plain HTTP to the TLS port: no answer comes back.
        let plain = ControlClient::new(&format!("http://{}", svc.addr), None).expect("client");
        let e = plain.nodes().await.expect_err("plain http to a TLS port");
        assert!(
            matches!(e, berth_volume_client::ClientError::Transport(_)),
            "{e:?}"
        );
    });
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_certificate_without_its_key_refuses_to_start() {
    let pki = pki();
    let state = tempfile::tempdir().expect("tmp");
    let st = state.path().display().to_string();
    let (code, err) = run(&[
        "control",
        "--insecure",
        "--state",
        &st,
        "--tls-cert",
        pki.cert.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--tls-cert and --tls-key go together: --tls-cert given without the other"),
        "{err}"
    );
}

#[test]
fn the_config_file_gives_flags_below_the_command_line() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("berth.toml");
    let st = dir.path().join("st").display().to_string();
    // From the file: --insecure, --state and half of the TLS pair, so the service refuses to
    // start naming the flag the file gave.
    std::fs::write(
        &config,
        format!(
            "insecure = true\nstate = {st:?}\ntls-cert = {:?}\n",
            pki.cert.display().to_string()
        ),
    )
    .expect("write");
    let c = config.to_str().expect("utf-8");
    let (code, err) = run(&["--config", c, "control"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--tls-cert given without the other"), "{err}");
    // The command line completes the pair: past the TLS check, its --listen fails to bind.
    let (code, err) = run(&[
        "control",
        "--config",
        c,
        "--tls-key",
        pki.key.to_str().expect("utf-8"),
        "--listen",
        "not-an-address",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("binding not-an-address"), "{err}");

    std::fs::write(&config, "insecure = true\ntoken-fil = \"/t\"\n").expect("write");
    let (code, err) = run(&["--config", c, "control"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("config file {c}: unknown key `token-fil`")),
        "{err}"
    );

    let missing = dir.path().join("none.toml");
    let m = missing.to_str().expect("utf-8");
    let (code, err) = run(&["control", &format!("--config={m}")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read config file {m}")),
        "{err}"
    );
}

/// Three `--raft-id` members serving TLS: their Raft RPCs go over it (trusting `--tls-ca`), so
/// a leader is elected and serves; a client following `https://` leader hints reaches it.
#[test]
fn a_replicated_control_service_elects_and_serves_over_tls() {
    let pki = pki();
    let root = tempfile::tempdir().expect("tmp");
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let token = root.path().join("token");
    std::fs::write(&token, "tls-raft-token").expect("token");
    let _members: Vec<crate::support::Proc> = (0..3)
        .map(|i| {
            let mut args: Vec<String> = vec![
                "control".into(),
                "--listen".into(),
                addrs[i].clone(),
                "--state".into(),
                root.path().join(format!("m{i}")).display().to_string(),
                "--token-file".into(),
                token.display().to_string(),
                "--raft-id".into(),
                (i + 1).to_string(),
                "--tls-cert".into(),
                pki.cert.display().to_string(),
                "--tls-key".into(),
                pki.key.display().to_string(),
                "--tls-ca".into(),
                pki.ca.display().to_string(),
            ];
            for (j, a) in addrs.iter().enumerate() {
                args.extend(["--peer".into(), format!("{}={a}", j + 1)]);
            }
            crate::support::spawn(&args)
        })
        .collect();
    let urls = addrs
        .iter()
        .map(|a| format!("https://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let client = ControlClient::with_ca(&urls, Some("tls-raft-token".into()), Some(&pki.ca))
        .expect("client");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let last = match rt.block_on(client.nodes()) {
            Ok(nodes) => {
                assert!(nodes.is_empty());
                break;
            }
            Err(e) => berth_volume_client::error_chain::chain(&e),
        };
        assert!(
            std::time::Instant::now() < deadline,
            "no member served over TLS: {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
