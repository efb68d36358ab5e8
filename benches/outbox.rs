//! Outbox benchmarks (`cargo bench --bench outbox`):
//! - append rate with `durability: always`, 64-byte payloads (push + grouped commit);
//! - drain rate of a stored backlog to mosquitto at QoS 1, against a plain rumqttc publisher
//!   sending the same messages straight to the same mosquitto in the same run;
//! - RSS with 1 000 000 messages buffered (the backlog lives on disk).
//!
//! The drain comparison needs `mosquitto` (Debian package); without it that part is skipped.
//! A summary with the ratios is printed at the end.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use edgebus::message::{Message, QoS};
use edgebus::outbox::{BufferConfig, Durability, Outbox};
use edgebus::upstream::{Upstream, UpstreamConfig};
use tokio_util::sync::CancellationToken;

const PAYLOAD: [u8; 64] = [0x42; 64];
const DRAIN_N: u64 = 20_000;
const WINDOW: u16 = 64;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn msg(i: u64) -> Message {
    Message::new(
        format!("bench/gw/t{}", i % 8),
        PAYLOAD.to_vec(),
        QoS::AtLeastOnce,
        false,
    )
}

/// Pushes `n` messages in `always` mode and waits until they are committed.
async fn append(dir: &Path, n: u64) -> Duration {
    let cfg = BufferConfig {
        durability: Durability::Always,
        max_bytes: 4 << 30,
        ..Default::default()
    };
    let o = Outbox::open(dir, &cfg).expect("open");
    let msgs: Vec<Message> = (0..n).map(msg).collect();
    let t0 = Instant::now();
    for m in msgs {
        o.push(m).await.expect("push");
    }
    o.sync().await.expect("sync");
    let d = t0.elapsed();
    o.close().await.expect("close");
    d
}

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> Option<Mosquitto> {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
             persistence false\nmax_queued_messages 0\nlog_dest none\n"
        ),
    )
    .ok()?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Mosquitto {
        child,
        port,
        _dir: dir,
    })
}

/// Stored backlog of `n` messages drained through the upstream; time from start to empty.
async fn drain(dir: &Path, port: u16, n: u64) -> Duration {
    let buffer = BufferConfig::default();
    let o = Outbox::open(dir, &buffer).expect("open");
    for i in 0..n {
        o.push(msg(i)).await.expect("push");
    }
    o.sync().await.expect("sync");
    let up = UpstreamConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        max_inflight: WINDOW,
        ..Default::default()
    };
    let t0 = Instant::now();
    let (u, _h) = Upstream::new(&up, "bench/gw/status".into(), "bench-gw".into(), o.clone())
        .expect("upstream");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(u.run(cancel.clone()));
    while o.stats().depth > 0 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let d = t0.elapsed();
    cancel.cancel();
    let _ = task.await;
    o.close().await.expect("close");
    d
}

/// The same messages published straight with rumqttc (QoS 1, same window); time until every
/// PUBACK is in.
async fn direct(port: u16, n: u64) -> Duration {
    let t0 = Instant::now();
    let mut o = rumqttc::MqttOptions::new("bench-direct", "127.0.0.1", port);
    o.set_inflight(WINDOW);
    let (client, mut el) = rumqttc::AsyncClient::new(o, WINDOW as usize * 2);
    let mut no = rumqttc::NetworkOptions::new();
    no.set_tcp_nodelay(true);
    el.set_network_options(no);
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("direct publisher: {e}"),
            }
        }
    });
    for i in 0..n {
        let m = msg(i);
        client
            .publish(
                m.topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                m.payload.to_vec(),
            )
            .await
            .expect("publish");
    }
    acks.await.expect("acks");
    t0.elapsed()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("outbox_append_always_64B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("push+commit", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("tempdir");
            rt.block_on(append(dir.path(), iters))
        })
    });
    g.finish();

    let Some(m) = mosquitto() else {
        eprintln!("SKIPPED drain benchmarks: mosquitto not installed");
        return;
    };
    let mut g = c.benchmark_group("drain_qos1_to_mosquitto");
    g.throughput(Throughput::Elements(DRAIN_N));
    g.sample_size(10);
    g.bench_function("edgebus_outbox_backlog", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                total += rt.block_on(drain(dir.path(), m.port, DRAIN_N));
            }
            total
        })
    });
    g.bench_function("rumqttc_direct", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(direct(m.port, DRAIN_N));
            }
            total
        })
    });
    g.finish();
}

/// Plain figures and ratios, measured back to back.
fn summary() {
    let rt = rt();
    println!("\n== edgebus outbox summary ==");
    let n = 200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = rt.block_on(append(dir.path(), n));
    let rate = n as f64 / d.as_secs_f64();
    println!(
        "append (always, 64 B): {rate:.0} msg/s = {:.2} x the 200k msg/s target",
        rate / 200_000.0
    );
    if let Some(m) = mosquitto() {
        let mut ratios = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let a = rt.block_on(drain(dir.path(), m.port, DRAIN_N));
            let b = rt.block_on(direct(m.port, DRAIN_N));
            let ra = DRAIN_N as f64 / a.as_secs_f64();
            let rb = DRAIN_N as f64 / b.as_secs_f64();
            println!(
                "drain QoS 1: outbox {ra:.0} msg/s, direct rumqttc {rb:.0} msg/s, ratio {:.2}",
                ra / rb
            );
            ratios.push(ra / rb);
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        println!(
            "drain ratio (median of 5): {:.2} (target >= 0.80)",
            ratios[2]
        );
    }
    // Memory with a large backlog: 1 000 000 messages buffered with the link down.
    let dir = tempfile::tempdir().expect("tempdir");
    let before = rss_kib();
    rt.block_on(async {
        let o = Outbox::open(dir.path(), &BufferConfig::default()).expect("open");
        let base = rss_kib();
        for i in 0..1_000_000u64 {
            o.push(msg(i)).await.expect("push");
            if i % 50_000 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        o.sync().await.expect("sync");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = o.stats();
        let after = rss_kib();
        println!(
            "1 000 000 buffered: depth {}, in memory {}, RSS {} KiB -> {} KiB (+{} KiB; process RSS before the outbox {} KiB)",
            s.depth,
            s.in_memory,
            base,
            after,
            after.saturating_sub(base),
            before
        );
        o.close().await.expect("close");
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    summary();
}
