//! Shared pieces of the MQTT-SN integration tests: in-memory outbox/upstream, a small
//! MQTT-SN client, and the "peer missing" rule (skip locally, fail in CI).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgebus::message::{Message, QoS};
use edgebus::mqttsn::codec::{self, Datagram, Encapsulation, Flags, Packet, Qos, ReturnCode};
use edgebus::mqttsn::runtime::Bound;
use edgebus::mqttsn::{Delivery, Downlink, MqttSnConfig, Rejected, Uplink};
use futures::future::BoxFuture;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Returns false (after printing why) when a peer program is missing; panics in CI.
pub fn peer_available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test peer missing in CI: {what}");
    }
    eprintln!("skipping: test peer missing: {what}");
    false
}

#[derive(Default)]
pub struct MemUplink {
    pub msgs: Mutex<Vec<Message>>,
    pub congested: AtomicBool,
}

impl MemUplink {
    pub fn topics(&self) -> Vec<(String, Vec<u8>, u8, bool)> {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .map(|m| (m.topic.clone(), m.payload.to_vec(), m.qos.as_u8(), m.retain))
            .collect()
    }
}

impl Uplink for MemUplink {
    fn publish(&self, msg: Message) -> BoxFuture<'static, Result<(), Rejected>> {
        let r = if self.congested.load(Ordering::SeqCst) {
            Err(Rejected::Congestion)
        } else {
            self.msgs.lock().unwrap().push(msg);
            Ok(())
        };
        Box::pin(async move { r })
    }
}

#[derive(Default)]
pub struct MemDownlink {
    pub log: Mutex<Vec<String>>,
}

impl Downlink for MemDownlink {
    fn subscribe(&self, filter: &str, qos: QoS) {
        self.log
            .lock()
            .unwrap()
            .push(format!("sub {filter} {}", qos.as_u8()));
    }
    fn unsubscribe(&self, filter: &str) {
        self.log.lock().unwrap().push(format!("unsub {filter}"));
    }
}

pub struct Harness {
    pub addr: SocketAddr,
    pub uplink: Arc<MemUplink>,
    pub downlink: Arc<MemDownlink>,
    pub deliver: mpsc::Sender<Delivery>,
    pub stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A gateway on 127.0.0.1:<free port> with in-memory outbox and upstream.
pub async fn start(f: impl FnOnce(&mut MqttSnConfig)) -> Harness {
    let mut cfg = MqttSnConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        ..MqttSnConfig::default()
    };
    f(&mut cfg);
    let b = Bound::bind(cfg).await.unwrap();
    let addr = b.local_addrs()[0];
    let uplink = Arc::new(MemUplink::default());
    let downlink = Arc::new(MemDownlink::default());
    let (tx, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    tokio::spawn(b.run(uplink.clone(), downlink.clone(), rx, stop.clone()));
    Harness {
        addr,
        uplink,
        downlink,
        deliver: tx,
        stop,
    }
}

/// Waits until `f` holds, up to 10 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A minimal MQTT-SN client over UDP (optionally behind a forwarder header).
pub struct Client {
    pub sock: UdpSocket,
    pub gw: SocketAddr,
    pub node: Option<Vec<u8>>,
    pub msg_id: u16,
}

impl Client {
    pub async fn new(gw: SocketAddr) -> Client {
        let bind = if gw.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        Client {
            sock: UdpSocket::bind(bind).await.unwrap(),
            gw,
            node: None,
            msg_id: 0,
        }
    }

    pub async fn send(&self, p: Packet) {
        let d = Datagram {
            encap: self
                .node
                .clone()
                .map(|node_id| Encapsulation { ctrl: 0, node_id }),
            packet: p,
        };
        let mut b = Vec::new();
        codec::encode(&d, &mut b).unwrap();
        self.sock.send_to(&b, self.gw).await.unwrap();
    }

    pub async fn recv(&self) -> Packet {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("no answer from the gateway")
    }

    pub async fn try_recv(&self, t: Duration) -> Option<Packet> {
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(t, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let d = codec::decode(&buf[..n]).unwrap();
        assert_eq!(
            d.encap.map(|e| e.node_id),
            self.node,
            "forwarder header echoed"
        );
        Some(d.packet)
    }

    pub async fn request(&self, p: Packet) -> Packet {
        self.send(p).await;
        self.recv().await
    }

    pub async fn connect(&self, id: &str, keep_alive: u16) {
        let r = self
            .request(Packet::Connect {
                flags: Flags {
                    clean_session: true,
                    ..Flags::default()
                },
                protocol_id: 1,
                duration: keep_alive,
                client_id: id.into(),
            })
            .await;
        assert_eq!(
            r,
            Packet::ConnAck {
                rc: ReturnCode::Accepted
            }
        );
    }

    pub async fn register(&mut self, topic: &str) -> u16 {
        self.msg_id += 1;
        match self
            .request(Packet::Register {
                topic_id: 0,
                msg_id: self.msg_id,
                topic: topic.into(),
            })
            .await
        {
            Packet::RegAck {
                topic_id,
                rc: ReturnCode::Accepted,
                ..
            } => topic_id,
            other => panic!("{other:?}"),
        }
    }

    pub fn publish_packet(&mut self, qos: Qos, topic_id: u16, data: &[u8]) -> Packet {
        self.msg_id += 1;
        Packet::Publish {
            flags: Flags {
                qos,
                ..Flags::default()
            },
            topic_id,
            msg_id: if qos == Qos::Zero { 0 } else { self.msg_id },
            data: data.to_vec(),
        }
    }
}

pub mod direct;

/// A private mosquitto on a free port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mosquitto, or returns None (skip locally, panic in CI) if it is not installed.
pub fn mosquitto() -> Option<Mosquitto> {
    let have = std::process::Command::new("mosquitto")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !peer_available("mosquitto (Debian package mosquitto)", have) {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 100000\n"),
    )
    .unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Mosquitto {
        port,
        child,
        _dir: dir,
    })
}

/// Starts a gateway whose uplink/downlink is a direct MQTT connection to `port`.
pub async fn start_direct(
    port: u16,
    f: impl FnOnce(&mut MqttSnConfig),
) -> (SocketAddr, CancellationToken) {
    let mut cfg = MqttSnConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        ..MqttSnConfig::default()
    };
    f(&mut cfg);
    let b = Bound::bind(cfg).await.unwrap();
    let addr = b.local_addrs()[0];
    let (d, rx) = direct::connect("127.0.0.1", port, "edgebus-mqttsn-test");
    let stop = CancellationToken::new();
    tokio::spawn(b.run(d.clone(), d, rx, stop.clone()));
    (addr, stop)
}
