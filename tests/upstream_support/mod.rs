//! Test peers for the upstream tests: a real mosquitto on a free loopback port (stopped and
//! restarted at will), a recording subscriber, and a gateway (outbox + upstream) to drive.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgebus::message::{Message, QoS};
use edgebus::outbox::{BufferConfig, Outbox};
use edgebus::upstream::{Upstream, UpstreamConfig, UpstreamHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

pub fn mosquitto_bin() -> Option<PathBuf> {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// Whether mosquitto is here; skips (with a reason) on a dev box, fails in CI.
pub fn have_mosquitto() -> bool {
    if mosquitto_bin().is_some() {
        return true;
    }
    if in_ci() {
        panic!("mosquitto is missing in CI (apt-get install -y mosquitto)");
    }
    eprintln!("SKIPPED: mosquitto not installed (apt-get install -y mosquitto)");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

/// A mosquitto process with its own config and persistence directory.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Broker {
    /// Starts mosquitto with a plain listener on `port` plus `extra` config lines (which may
    /// open more listeners or configure TLS on this one).
    pub fn start(extra: &str) -> Broker {
        Self::start_on(free_port(), extra)
    }

    pub fn start_on(port: u16, extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        // As root, mosquitto drops to user `mosquitto`, which cannot write our temp dir.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        let text = format!(
            "{user}persistence true\n\
             persistence_location {dir}/\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\n\
             max_queued_messages 0\n\
             set_tcp_nodelay true\n\
             per_listener_settings false\n\
             allow_anonymous true\n\
             listener {port} 127.0.0.1\n\
             {extra}\n",
            dir = dir.path().display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut b = Broker {
            child: None,
            port,
            dir,
            conf,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let bin = mosquitto_bin().expect("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                panic!("mosquitto did not listen on {}: {}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Graceful stop (SIGTERM: mosquitto saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A subscriber that records everything the broker delivers, across broker restarts
/// (persistent session, QoS 1).
/// (topic, payload, retain) in arrival order.
pub type Record = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

pub struct Recorder {
    pub got: Record,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start(port: u16, filter: &str) -> Recorder {
        Self::start_with(port, filter, |_| {}).await
    }

    pub async fn start_with(
        port: u16,
        filter: &str,
        tweak: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> Recorder {
        let mut o = rumqttc::MqttOptions::new(format!("recorder-{port}"), "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(2 << 20, 2 << 20);
        tweak(&mut o);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
        let got: Record = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let filter = filter.to_string();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        g.lock()
                            .unwrap()
                            .push((p.topic, p.payload.to_vec(), p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("recorder subscribed")
            .expect("recorder task");
        Recorder { got, task }
    }

    /// Payloads received on `topic`, in arrival order.
    pub fn on(&self, topic: &str) -> Vec<Vec<u8>> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Numbered payloads per topic under `prefix` (topic -> numbers in arrival order).
    pub fn numbers(&self, prefix: &str) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (t, p, _) in self.got.lock().unwrap().iter() {
            if let Some(rest) = t.strip_prefix(prefix) {
                let n = std::str::from_utf8(p).ok().and_then(|s| s.parse().ok());
                if let Some(n) = n {
                    out.entry(format!("{prefix}{rest}")).or_default().push(n);
                }
            }
        }
        out
    }
}

/// Waits for `f` up to `secs`, polling.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// An outbox and an upstream, as the pipeline wires them.
pub struct Gateway {
    pub outbox: Outbox,
    pub handle: UpstreamHandle,
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<()>>,
    pub data: PathBuf,
}

pub const STATUS: &str = "test/gw/status";

impl Gateway {
    pub fn start(data: &Path, buffer: &BufferConfig, up: &UpstreamConfig) -> Gateway {
        let outbox = Outbox::open(data, buffer).expect("outbox");
        let (u, handle) =
            Upstream::new(up, STATUS.into(), "gw-test".into(), outbox.clone()).expect("upstream");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(u.run(cancel.clone()));
        Gateway {
            outbox,
            handle,
            cancel,
            task: Some(task),
            data: data.to_path_buf(),
        }
    }

    /// Graceful stop: upstream says offline, outbox commits.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("upstream stops")
                .expect("upstream task");
        }
        self.outbox.close().await.expect("outbox close");
    }

    /// Like `kill -9`: nothing more is written or sent.
    pub fn crash(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.outbox.simulate_crash();
    }
}

pub fn numbered(topic: &str, n: u64) -> Message {
    Message::new(topic, n.to_string().into_bytes(), QoS::AtLeastOnce, false)
}

pub fn plain(port: u16) -> UpstreamConfig {
    UpstreamConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        keep_alive: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// Checks a delivery record against what was produced: every number 0..n on every topic,
/// first occurrences in increasing order (order kept), and returns the duplicate count.
pub fn check_delivery(
    got: &BTreeMap<String, Vec<u64>>,
    topics: &[String],
    n_per_topic: &[u64],
) -> usize {
    let mut dups = 0;
    for (t, &n) in topics.iter().zip(n_per_topic) {
        let seq = got.get(t).cloned().unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        let mut firsts = Vec::new();
        for x in &seq {
            if seen.insert(*x) {
                firsts.push(*x);
            } else {
                dups += 1;
            }
        }
        let expected: Vec<u64> = (0..n).collect();
        assert_eq!(
            firsts.len(),
            expected.len(),
            "{t}: {} distinct of {n} delivered; missing e.g. {:?}",
            firsts.len(),
            expected
                .iter()
                .filter(|x| !seen.contains(x))
                .take(10)
                .collect::<Vec<_>>()
        );
        assert_eq!(firsts, expected, "{t}: order not kept");
    }
    dups
}
