//! The one HTTP call the harness makes to Berth's services (`berth run`'s API, the volume
//! control service): a bounded `GET`, its body read as JSON whatever the status (a standby
//! names its leader in a 200, a non-serving member explains itself in a 503).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `addr` (HTTP/1.0, so the body ends with the connection), its body as JSON;
/// `None` when nothing answered in time or the body is not JSON.
pub fn get_json(addr: &str, path: &str, token: Option<&str>) -> Option<serde_json::Value> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let (_, json) = body.split_once("\r\n\r\n")?;
    serde_json::from_str(json).ok()
}
