//! Shared by the operations tests (metrics, health, availability, Home Assistant): a gateway
//! run in-process from YAML against a real mosquitto, and small helpers around it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgebus::config::Config;
use edgebus::pipeline::Gateway;

/// Parses a map the way `edgebus run` does (file name only used in messages).
pub fn config(dir: &Path, yaml: &str) -> Config {
    let file = dir.join("edgebus.yaml");
    std::fs::write(&file, yaml).expect("write map");
    match Config::load(&file) {
        Ok(c) => c,
        Err(e) => panic!("test map rejected:\n{e}"),
    }
}

pub async fn start(dir: &Path, yaml: &str) -> Gateway {
    Gateway::start(config(dir, yaml))
        .await
        .expect("gateway starts")
}

/// Polls `f` (on a blocking-friendly thread) until it holds or `secs` pass.
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f(), "timed out after {secs}s waiting for: {what}");
}

/// `mosquitto_pub` one message.
pub fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "mosquitto_pub to {topic} failed");
}

/// One HTTP GET (HTTP/1.1, connection closed), returning the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of one series in Prometheus text: `name` with labels containing every pair.
/// Sums over matching series (a counter split by another label).
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = key.split_once('{').unwrap_or((key, ""));
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            && let Ok(v) = value.parse::<f64>()
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}
