//! Shared test support: real peers (mosquitto, mosquitto_sub) started on free loopback ports,
//! and the rule for missing peers: skip with a printed reason on a dev box, fail in CI.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when running in CI, where a missing peer is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns false (and prints why) when `program` is missing on a dev box; panics in CI.
pub fn require_program(program: &str, hint: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if in_ci() {
            panic!("test peer `{program}` is missing in CI ({hint})");
        }
        eprintln!("SKIPPED: `{program}` not installed ({hint})");
    }
    found
}

/// A free TCP port on loopback (racy by nature, good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn mosquitto_path() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    "mosquitto".to_string()
}

/// Whether mosquitto is available (skip/fail rule applied).
pub fn have_mosquitto() -> bool {
    let ok = Path::new("/usr/sbin/mosquitto").exists() || Path::new("/usr/bin/mosquitto").exists();
    if !ok {
        if in_ci() {
            panic!("mosquitto is missing in CI (apt-get install mosquitto)");
        }
        eprintln!("SKIPPED: mosquitto not installed (apt-get install mosquitto mosquitto-clients)");
    }
    ok && require_program("mosquitto_sub", "apt-get install mosquitto-clients")
}

/// A mosquitto broker on a loopback port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mosquitto {
            port,
            child: None,
            dir,
        };
        m.restart();
        m
    }

    fn conf(&self) -> PathBuf {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n",
                self.port
            ),
        )
        .expect("write mosquitto.conf");
        conf
    }

    pub fn restart(&mut self) {
        self.stop();
        let conf = self.conf();
        let child = Command::new(mosquitto_path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_port(port: u16, max: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port} after {max:?}");
}

/// `mosquitto_sub -v` recording every message (QoS 1, persistent session) as (topic, payload).
pub struct Recorder {
    child: Child,
    pub lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    pub fn start(port: u16, filter: &str) -> Recorder {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-v",
                "-t",
                filter,
            ])
            .args(["-i", &format!("recorder-{port}"), "-c"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (t, p) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                sink.lock()
                    .expect("recorder lock")
                    .push((t.to_string(), p.to_string()));
            }
        });
        // Give the subscription a moment to be in place.
        std::thread::sleep(Duration::from_millis(300));
        Recorder { child, lines }
    }

    pub fn count(&self, topic: &str) -> usize {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == topic)
            .count()
    }

    pub fn payloads(&self, topic: &str) -> Vec<String> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Waits until `f` holds or `max` passes; returns whether it held.
    pub fn wait_for(&self, max: Duration, f: impl Fn(&[(String, String)]) -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < max {
            if f(&self.lines.lock().expect("lock")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        f(&self.lines.lock().expect("lock"))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `value` field of one of our JSON payloads.
pub fn json_value(payload: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .map(|v| v["value"].clone())
}
