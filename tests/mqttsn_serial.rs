//! MQTT-SN over a serial line: the same gateway behind a pseudo-terminal pair (socat), the
//! way a radio module or mqtt-sn-tools' serial bridge would talk to it.

mod emulation;
mod mqttsn_support;

use std::sync::Arc;
use std::time::Duration;

use edgebus::mqttsn::codec::{self, Flags, Packet, Qos, ReturnCode};
use edgebus::mqttsn::config::SerialConfig;
use edgebus::mqttsn::runtime::Bound;
use edgebus::mqttsn::{MqttSnConfig, serial::Framer};
use mqttsn_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Line<S> {
    io: S,
    framer: Framer,
    frames: std::collections::VecDeque<Vec<u8>>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Line<S> {
    async fn send(&mut self, p: Packet) {
        let b = codec::encode_to_vec(&p).unwrap();
        self.io.write_all(&b).await.unwrap();
    }
    async fn recv(&mut self) -> Packet {
        let mut buf = [0u8; 256];
        while self.frames.is_empty() {
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf))
                .await
                .expect("no answer on the serial line")
                .unwrap();
            assert!(n > 0, "serial line closed");
            self.frames
                .extend(self.framer.push(std::time::Instant::now(), &buf[..n]));
        }
        codec::decode(&self.frames.pop_front().unwrap())
            .unwrap()
            .packet
    }
}

async fn conversation<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: S,
    up: &MemUplink,
) {
    let mut l = Line {
        io,
        framer: Framer::new(256, Duration::from_secs(1)),
        frames: Default::default(),
    };
    // line noise first: the gateway resynchronises
    l.io.write_all(&[0, 0, 0]).await.unwrap();
    l.send(Packet::Connect {
        flags: Flags {
            clean_session: true,
            ..Flags::default()
        },
        protocol_id: 1,
        duration: 30,
        client_id: "radio-1".into(),
    })
    .await;
    assert_eq!(
        l.recv().await,
        Packet::ConnAck {
            rc: ReturnCode::Accepted
        }
    );
    l.send(Packet::Register {
        topic_id: 0,
        msg_id: 1,
        topic: "serial/t".into(),
    })
    .await;
    let Packet::RegAck { topic_id, .. } = l.recv().await else {
        panic!()
    };
    l.send(Packet::Publish {
        flags: Flags {
            qos: Qos::One,
            ..Flags::default()
        },
        topic_id,
        msg_id: 2,
        data: b"21.5".to_vec(),
    })
    .await;
    assert!(matches!(
        l.recv().await,
        Packet::PubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    assert_eq!(
        up.topics(),
        [("serial/t".to_string(), b"21.5".to_vec(), 1, false)]
    );
}

#[tokio::test]
async fn serial_link_in_memory() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let up = Arc::new(MemUplink::default());
    let (_tx, rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(edgebus::mqttsn::runtime::serve(
        MqttSnConfig::default(),
        Vec::new(),
        vec![ours],
        up.clone(),
        Arc::new(MemDownlink::default()),
        rx,
        stop.clone(),
    ));
    conversation(theirs, &up).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn serial_port_through_a_pty_pair() {
    if !emulation::serial_usable("serial_port_through_a_pty_pair") {
        return;
    }
    let have = std::process::Command::new("socat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !peer_available("socat (Debian package socat)", have) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("gw"), dir.path().join("node"));
    let mut socat = tokio::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("socat ptys", || a.exists() && b.exists()).await;
    let cfg = MqttSnConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        serial: Some(SerialConfig {
            port: a.display().to_string(),
            baud: 115_200,
        }),
        ..MqttSnConfig::default()
    };
    let gw = Bound::bind(cfg).await.unwrap();
    let up = Arc::new(MemUplink::default());
    let (_tx, rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    tokio::spawn(gw.run(
        up.clone(),
        Arc::new(MemDownlink::default()),
        rx,
        stop.clone(),
    ));
    let node = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .await
        .unwrap();
    conversation(node, &up).await;
    stop.cancel();
    let _ = socat.kill().await;
}
