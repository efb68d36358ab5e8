//! Upstream against mosquitto with TLS (certificates generated here with rcgen), mutual TLS,
//! a wrong CA (refused, data kept), username/password, MQTT 5, and MQTT over WebSocket.

mod upstream_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgebus::outbox::BufferConfig;
use edgebus::upstream::{Protocol, TlsConfig, UpstreamConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use upstream_support::*;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// ca.pem, server.pem/.key (localhost, 127.0.0.1), client.pem/.key, and other-ca.pem.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let root = ca("edgebus test ca");
        write("ca.pem", root.pem());
        write("other-ca.pem", ca("someone else").pem());
        let leaf = |names: Vec<String>, cn: &str, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.signed_by(&key, &root).unwrap();
            write(&format!("{stem}.pem"), cert.pem());
            write(&format!("{stem}.key"), key.serialize_pem());
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            "server",
        );
        leaf(vec![], "gateway-7", "client");
        Pki { dir }
    }

    fn listener(&self, port: u16, extra: &str) -> String {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n{extra}\n",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }
}

fn secure(url: String, ca: &Path) -> UpstreamConfig {
    let mut c = plain(0);
    c.url = url;
    c.tls = Some(TlsConfig {
        ca: Some(ca.to_path_buf()),
        cert: None,
        key: None,
    });
    c
}

async fn push_numbers(gw: &Gateway, topic: &str, n: u64) {
    for i in 0..n {
        gw.outbox.push(numbered(topic, i)).await.unwrap();
    }
}

async fn assert_delivered(rec: &Recorder, topic: &str, n: u64) {
    assert!(
        eventually(20, || rec.on(topic).len() as u64 >= n).await,
        "{} of {n} delivered on {topic}",
        rec.on(topic).len()
    );
    check_delivery(&rec.numbers(topic), &[topic.to_string()], &[n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_file_delivers() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Broker::start(&pki.listener(tls_port, ""));
    let rec = Recorder::start(broker.port, "test/gw/#").await;
    let data = tempfile::tempdir().unwrap();
    let cfg = secure(format!("mqtts://localhost:{tls_port}"), &pki.path("ca.pem"));
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    push_numbers(&gw, "test/gw/tls", 300).await;
    assert_delivered(&rec, "test/gw/tls", 300).await;
    assert!(eventually(5, || gw.outbox.stats().depth == 0).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused_and_data_stays_buffered() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Broker::start(&pki.listener(tls_port, ""));
    let rec = Recorder::start(broker.port, "test/gw/#").await;
    let data = tempfile::tempdir().unwrap();
    let cfg = secure(
        format!("mqtts://localhost:{tls_port}"),
        &pki.path("other-ca.pem"),
    );
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    push_numbers(&gw, "test/gw/tls", 100).await;
    assert!(eventually(10, || gw.handle.status().failures >= 2).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = gw.handle.status();
    assert!(!st.connected);
    assert_eq!(st.connects, 0);
    let err = st.last_error.unwrap_or_default().to_lowercase();
    assert!(err.contains("certificate") || err.contains("tls"), "{err}");
    assert_eq!(gw.outbox.stats().depth, 100, "kept buffered");
    assert_eq!(rec.count(), 0);
    gw.stop().await;
    // With the right CA the same buffer is delivered.
    let cfg = secure(format!("mqtts://localhost:{tls_port}"), &pki.path("ca.pem"));
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    assert_delivered(&rec, "test/gw/tls", 100).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_the_client_certificate() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Broker::start(&pki.listener(tls_port, "require_certificate true"));
    let rec = Recorder::start(broker.port, "test/gw/#").await;
    let url = format!("mqtts://localhost:{tls_port}");

    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        data.path(),
        &BufferConfig::default(),
        &secure(url.clone(), &pki.path("ca.pem")),
    );
    push_numbers(&gw, "test/gw/mtls", 50).await;
    assert!(eventually(10, || gw.handle.status().failures >= 2).await);
    assert_eq!(
        gw.handle.status().connects,
        0,
        "no client certificate: refused"
    );
    gw.stop().await;

    let mut cfg = secure(url, &pki.path("ca.pem"));
    cfg.tls = Some(TlsConfig {
        ca: Some(pki.path("ca.pem")),
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client.key")),
    });
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    assert_delivered(&rec, "test/gw/mtls", 50).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_password_and_password_file() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    for (u, p) in [("gateway-7", "s3cret"), ("recorder", "rec")] {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if !pw.exists() {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&pw)
            .arg(u)
            .arg(p)
            .status()
            .map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            if in_ci() {
                panic!("mosquitto_passwd failed");
            }
            eprintln!("SKIPPED: mosquitto_passwd not available");
            return;
        }
    }
    let broker = Broker::start(&format!(
        "password_file {}\nallow_anonymous false",
        pw.display()
    ));
    let rec = Recorder::start_with(broker.port, "test/gw/#", |o| {
        o.set_credentials("recorder", "rec");
    })
    .await;
    let data = tempfile::tempdir().unwrap();

    let mut bad = plain(broker.port);
    bad.username = Some("gateway-7".into());
    bad.password = Some(edgebus::config::Secret::new("wrong"));
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &bad);
    push_numbers(&gw, "test/gw/auth", 40).await;
    assert!(eventually(10, || gw.handle.status().failures >= 2).await);
    assert_eq!(gw.handle.status().connects, 0);
    assert_eq!(gw.outbox.stats().depth, 40);
    gw.stop().await;

    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let mut good = plain(broker.port);
    good.username = Some("gateway-7".into());
    good.password_file = Some(secret);
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &good);
    assert_delivered(&rec, "test/gw/auth", 40).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_delivers_in_order_with_status() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start("");
    let rec = Recorder::start(broker.port, "test/gw/#").await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain(broker.port);
    cfg.protocol = Protocol::V5;
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    let mut downlink = gw.handle.incoming();
    gw.handle
        .subscribe("test/gw/+/set".into(), edgebus::message::QoS::AtLeastOnce);
    push_numbers(&gw, "test/gw/v5", 2000).await;
    assert_delivered(&rec, "test/gw/v5", 2000).await;
    assert!(eventually(5, || gw.outbox.stats().depth == 0).await);
    assert_eq!(rec.on(STATUS), vec![b"online".to_vec()]);
    let (c, mut el) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("writer5", "127.0.0.1", broker.port),
        10,
    );
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c.publish("test/gw/pump/set", rumqttc::QoS::AtLeastOnce, false, "on")
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), downlink.recv())
        .await
        .expect("downlink in time")
        .expect("open");
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("test/gw/pump/set", &b"on"[..])
    );
    gw.stop().await;
    assert!(
        eventually(5, || rec.on(STATUS).last().map(|v| v.as_slice())
            == Some(b"offline"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_secure_websocket() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let ws_port = free_port();
    let wss_port = free_port();
    let broker = Broker::start(&format!(
        "listener {ws_port} 127.0.0.1\nprotocol websockets\n{}",
        pki.listener(wss_port, "protocol websockets")
    ));
    let rec = Recorder::start(broker.port, "test/gw/#").await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain(broker.port);
    cfg.url = format!("ws://127.0.0.1:{ws_port}/mqtt");
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    push_numbers(&gw, "test/gw/ws", 200).await;
    assert_delivered(&rec, "test/gw/ws", 200).await;
    gw.stop().await;

    let cfg = secure(
        format!("wss://localhost:{wss_port}/mqtt"),
        &pki.path("ca.pem"),
    );
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &cfg);
    push_numbers(&gw, "test/gw/wss", 200).await;
    assert_delivered(&rec, "test/gw/wss", 200).await;
    gw.stop().await;
}
