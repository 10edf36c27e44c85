//! The one HTTP call the harness makes to Berth's services (`berth run`'s API, the volume
//! control service): a bounded `GET` (ureq), its body read as JSON whatever the status (a
//! standby names its leader in a 200, a non-serving member explains itself in a 503).

use std::sync::LazyLock;
use std::time::Duration;

/// Connections are kept between polls; a peer that is down fails the connect in 500 ms and one
/// that hangs is given up after 2 s, so a poll loop keeps its pace through faults.
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_millis(500)))
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into()
});

/// `GET path` on `addr`, its body as JSON; `None` when nothing answered in time or the body is
/// not JSON.
pub fn get_json(addr: &str, path: &str, token: Option<&str>) -> Option<serde_json::Value> {
    let mut req = AGENT.get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().ok()?;
    let body = resp.body_mut().read_to_string().ok()?;
    serde_json::from_str(&body).ok()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Answers each connection's first request with `status` and `body`, after checking the
    /// request carries `want` among its header lines (lower-cased).
    fn serve_once(status: &str, body: &'static str, want: Option<&'static str>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let status = status.to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let (status, body) = match want {
                Some(w) if !head.contains(w) => ("400 Bad Request".to_string(), "{}"),
                _ => (status, body),
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        });
        addr
    }

    #[test]
    fn a_503_body_is_read_as_json_too() {
        let addr = serve_once("503 Service Unavailable", r#"{"leader":"m2"}"#, None);
        let v = super::get_json(&addr, "/v1/berth/raft", None).expect("JSON");
        assert_eq!(v["leader"], "m2");
    }

    #[test]
    fn the_token_is_sent_as_a_bearer() {
        let addr = serve_once(
            "200 OK",
            r#"{"ok":true}"#,
            Some("authorization: bearer t0k"),
        );
        let v = super::get_json(&addr, "/v1/failovers", Some("t0k")).expect("JSON");
        assert_eq!(v["ok"], true);
    }

    #[test]
    fn nothing_listening_or_no_json_is_none() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(super::get_json(&addr, "/", None).is_none());
        let addr = serve_once("200 OK", "not json", None);
        assert!(super::get_json(&addr, "/", None).is_none());
    }
}
