//! Load tool for the MQTT-SN gateway: N clients x M messages through the gateway to
//! mosquitto, next to a plain MQTT publisher straight to the same mosquitto (the ceiling).
//!
//! ```text
//! cargo run --release --example mqttsn_load            # starts its own mosquitto
//! cargo run --release --example mqttsn_load -- --broker-port 1883
//! cargo run --release --example mqttsn_load -- --threads 1   # gateway on one thread
//! cargo run --release --example mqttsn_load -- --uplink always  # outbox commits each publish
//! cargo run --release --example mqttsn_load -- --uplink direct  # no outbox at all
//! cargo run --release --example mqttsn_load -- --only q1 --scale 10  # one scenario, longer
//! ```
//!
//! The gateway runs in a child process (this binary with `--gateway-child`), so its RSS is
//! measured alone. By default (`--uplink offline`) the child is the whole gateway as deployed
//! (`edgebus::pipeline::run` on a generated map: MQTT-SN into the SQLite outbox, the outbox
//! to mosquitto over the upstream connection, default `durability: offline`); a QoS 1 client
//! is acknowledged once the outbox holds its message. `--uplink always` does the same with
//! `durability: always` (acknowledged once committed to disk). `--uplink direct` replaces
//! outbox and upstream with a plain MQTT connection that confirms QoS 1 on the broker's
//! PUBACK, which measures the MQTT-SN side alone. Payloads carry the send time, so the
//! subscriber measures end-to-end latency.

#[path = "../tests/mqttsn_support/direct.rs"]
mod direct;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgebus::mqttsn::MqttSnConfig;
use edgebus::mqttsn::codec::{self, Flags, Packet, Qos, ReturnCode};
use edgebus::mqttsn::runtime::Bound;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn payload(client: u32, seq: u32) -> Vec<u8> {
    let mut p = now_ns().to_be_bytes().to_vec();
    p.extend_from_slice(&client.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// TCP_NODELAY, as the gateway's upstream connection sets it: without it Nagle's algorithm
/// holds small publishes back and the ceiling's latency is the kernel's, not the broker's.
fn nodelay() -> rumqttc::NetworkOptions {
    let mut no = rumqttc::NetworkOptions::new();
    no.set_tcp_nodelay(true);
    no
}

/// What the subscriber saw for one run.
#[derive(Default)]
struct Seen {
    ids: HashSet<(u32, u32)>,
    dups: u64,
    lat_us: Vec<u64>,
    last: Option<Instant>,
}

async fn subscriber(
    port: u16,
    filter: String,
    qos: rumqttc::QoS,
) -> (AsyncClient, Arc<Mutex<Seen>>) {
    let mut o = MqttOptions::new(format!("load-sub-{}", now_ns()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(1000);
    let (c, mut el) = AsyncClient::new(o, 1000);
    el.set_network_options(nodelay());
    c.subscribe(filter, qos).await.ok();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if p.payload.len() >= 16 => {
                    let b = &p.payload;
                    let sent = u64::from_be_bytes(b[0..8].try_into().unwrap_or([0; 8]));
                    let client = u32::from_be_bytes(b[8..12].try_into().unwrap_or([0; 4]));
                    let seq = u32::from_be_bytes(b[12..16].try_into().unwrap_or([0; 4]));
                    let lat = now_ns().saturating_sub(sent) / 1000;
                    let mut s = s2.lock().unwrap();
                    if s.ids.insert((client, seq)) {
                        s.lat_us.push(lat);
                    } else {
                        s.dups += 1;
                    }
                    s.last = Some(Instant::now());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
    (c, seen)
}

/// Waits until `expected` arrived or nothing new came for 2 s.
async fn settle(seen: &Mutex<Seen>, expected: usize) {
    let mut last = 0;
    let mut quiet = Instant::now();
    loop {
        let n = seen.lock().unwrap().ids.len();
        if n >= expected {
            return;
        }
        if n != last {
            last = n;
            quiet = Instant::now();
        } else if quiet.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Report {
    name: String,
    sent: usize,
    delivered: usize,
    rate: f64,
    p50: f64,
    p99: f64,
    /// Through the gateway: the rate the clients achieved sending (the offer they managed).
    send_rate: Option<f64>,
}

impl Report {
    fn print(&self) {
        let loss = self.sent.saturating_sub(self.delivered);
        println!(
            "{:<44} sent {:>7}  delivered {:>7}  lost {:>6} ({:.2}%)  {:>9.0} msg/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.sent,
            self.delivered,
            loss,
            100.0 * loss as f64 / self.sent.max(1) as f64,
            self.rate,
            self.p50,
            self.p99
        );
    }
}

fn report(name: &str, sent: usize, seen: &Mutex<Seen>, start: Instant) -> Report {
    let s = seen.lock().unwrap();
    let mut lat = s.lat_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    let dur = s.last.map(|l| l.duration_since(start)).unwrap_or_default();
    Report {
        name: name.to_string(),
        sent,
        delivered: s.ids.len(),
        rate: s.ids.len() as f64 / dur.as_secs_f64().max(1e-9),
        p50: pct(0.5),
        p99: pct(0.99),
        send_rate: None,
    }
}

/// Publishes in flight towards mosquitto: the ceiling's window, and the gateway's upstream
/// window (`upstream.max_inflight`) in the whole-gateway modes, so both wait on the broker alike.
const INFLIGHT: u16 = 100;

/// Plain MQTT publisher straight to the broker: `total` messages, paced at `rate` (0 = max).
async fn ceiling(port: u16, run: &str, total: usize, qos: rumqttc::QoS, rate: f64) -> Report {
    let rq = if qos == rumqttc::QoS::AtMostOnce {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    };
    let (_sub, seen) = subscriber(port, format!("load/{run}/#"), rq).await;
    let mut o = MqttOptions::new(format!("load-pub-{run}"), "127.0.0.1", port);
    o.set_inflight(INFLIGHT);
    let (c, mut el) = AsyncClient::new(o, 1000);
    el.set_network_options(nodelay());
    // The clock starts once connected: publishes queued before CONNACK would count the
    // handshake as latency and lower the ceiling.
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut up_tx = Some(up_tx);
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(Incoming::ConnAck(_)) = ev
                && let Some(t) = up_tx.take()
            {
                let _ = t.send(());
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), up_rx).await;
    let start = Instant::now();
    for i in 0..total {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let _ = c
            .publish(
                format!("load/{run}/direct"),
                qos,
                false,
                payload(0, i as u32),
            )
            .await;
    }
    settle(&seen, total).await;
    let _ = c.disconnect().await;
    report(&format!("ceiling   {run}"), total, &seen, start)
}

struct SnClient {
    sock: UdpSocket,
    gw: SocketAddr,
}

impl SnClient {
    async fn request(&self, p: Packet) -> Option<Packet> {
        let b = codec::encode_to_vec(&p).ok()?;
        self.sock.send_to(&b, self.gw).await.ok()?;
        self.recv(Duration::from_secs(5)).await
    }
    async fn recv(&self, t: Duration) -> Option<Packet> {
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(t, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        codec::decode(&buf[..n]).ok().map(|d| d.packet)
    }
    /// Waits for the PUBACK of `p` (sent already); retransmits it with DUP set when `kick`
    /// fires, and gives up after five retransmissions.
    async fn await_ack(&self, p: &Packet, kick: &tokio::sync::Notify) {
        let Packet::Publish {
            flags,
            topic_id,
            msg_id,
            data,
        } = p
        else {
            return;
        };
        let mut buf = [0u8; 512];
        let mut retries = 0;
        loop {
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { return };
                    if let Ok(d) = codec::decode(&buf[..n])
                        && matches!(d.packet, Packet::PubAck { msg_id: m, .. } if m == *msg_id)
                    {
                        return;
                    }
                }
                _ = kick.notified() => {
                    retries += 1;
                    if retries > 5 {
                        return;
                    }
                    let again = Packet::Publish {
                        flags: Flags { dup: true, ..*flags },
                        topic_id: *topic_id,
                        msg_id: *msg_id,
                        data: data.clone(),
                    };
                    if let Ok(b) = codec::encode_to_vec(&again) {
                        let _ = self.sock.send_to(&b, self.gw).await;
                    }
                }
            }
        }
    }

    /// Connects and registers `topic`; returns its id.
    async fn open(gw: SocketAddr, id: &str, topic: &str) -> Option<(SnClient, u16)> {
        let c = SnClient {
            sock: UdpSocket::bind("127.0.0.1:0").await.ok()?,
            gw,
        };
        let r = c
            .request(Packet::Connect {
                flags: Flags {
                    clean_session: true,
                    ..Flags::default()
                },
                protocol_id: 1,
                duration: 600,
                client_id: id.into(),
            })
            .await?;
        if r != (Packet::ConnAck {
            rc: ReturnCode::Accepted,
        }) {
            return None;
        }
        match c
            .request(Packet::Register {
                topic_id: 0,
                msg_id: 1,
                topic: topic.into(),
            })
            .await?
        {
            Packet::RegAck {
                topic_id,
                rc: ReturnCode::Accepted,
                ..
            } => Some((c, topic_id)),
            _ => None,
        }
    }
}

/// `clients` MQTT-SN clients x `per_client` messages through the gateway; QoS 1 waits for
/// each PUBACK (one in flight per client). `rate` is the total rate (0 = max).
async fn through_gateway(
    port: u16,
    gw: SocketAddr,
    run: &str,
    clients: u32,
    per_client: u32,
    qos: Qos,
    rate: f64,
) -> Report {
    let rq = if qos == Qos::Zero {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    };
    let (_sub, seen) = subscriber(port, format!("load/{run}/#"), rq).await;
    let mut opened = Vec::new();
    for i in 0..clients {
        match SnClient::open(gw, &format!("{run}-{i}"), &format!("load/{run}/c{i}")).await {
            Some(c) => opened.push((i, c)),
            None => eprintln!("client {i} could not connect"),
        }
    }
    let start = Instant::now();
    let per_rate = if rate > 0.0 {
        rate / f64::from(clients)
    } else {
        0.0
    };
    let mut tasks = Vec::new();
    // A QoS 1 client waits for its PUBACK without a timer of its own (a timer per message
    // cost the load more CPU than some of what it measures, on the same cores as the
    // gateway); a watchdog kicks the clients that made no progress for a second into a
    // retransmission, as a node's retry timer would.
    let progress: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..opened.len())
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let kicks: Arc<Vec<tokio::sync::Notify>> = Arc::new(
        (0..opened.len())
            .map(|_| tokio::sync::Notify::new())
            .collect(),
    );
    let watchdog = tokio::spawn({
        let (progress, kicks) = (progress.clone(), kicks.clone());
        async move {
            let mut last: Vec<u64> = vec![0; progress.len()];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for (k, p) in progress.iter().enumerate() {
                    let now = p.load(std::sync::atomic::Ordering::Relaxed);
                    if now == last[k] {
                        kicks[k].notify_one();
                    }
                    last[k] = now;
                }
            }
        }
    });
    for (k, (i, (c, tid))) in opened.into_iter().enumerate() {
        let (progress, kicks) = (progress.clone(), kicks.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            for seq in 0..per_client {
                if per_rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(f64::from(seq) / per_rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let p = Packet::Publish {
                    flags: Flags {
                        qos,
                        ..Flags::default()
                    },
                    topic_id: tid,
                    msg_id: if qos == Qos::Zero {
                        0
                    } else {
                        (seq % 65_000 + 1) as u16
                    },
                    data: payload(i, seq),
                };
                let Ok(b) = codec::encode_to_vec(&p) else {
                    continue;
                };
                let _ = c.sock.send_to(&b, c.gw).await;
                if qos != Qos::Zero {
                    c.await_ack(&p, &kicks[k]).await;
                }
                progress[k].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    watchdog.abort();
    let sending = start.elapsed();
    settle(&seen, (clients * per_client) as usize).await;
    let mut r = report(
        &format!("gateway   {run}"),
        (clients * per_client) as usize,
        &seen,
        start,
    );
    r.send_rate = Some(r.sent as f64 / sending.as_secs_f64().max(1e-9));
    r
}

/// CPU time (user + system) a process has used so far, in milliseconds; 0 if unknown.
fn cpu_ms(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at the state (3).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 1000 / tck)
        })
        .unwrap_or(0)
}

/// The processes whose CPU time a scenario reports: the load (this process, clients,
/// subscriber and ceiling publisher), the gateway child and the broker if we started it.
#[derive(Clone, Copy)]
struct Procs {
    gateway: u32,
    broker: Option<u32>,
}

impl Procs {
    fn sample(&self) -> [u64; 3] {
        [
            cpu_ms(std::process::id()),
            cpu_ms(self.gateway),
            self.broker.map(cpu_ms).unwrap_or(0),
        ]
    }
    /// Prints the CPU time used since `before`, per message delivered.
    fn print_since(&self, before: [u64; 3], messages: usize) {
        let now = self.sample();
        let d: Vec<u64> = (0..3).map(|i| now[i].saturating_sub(before[i])).collect();
        let per = |ms: u64| ms as f64 * 1000.0 / messages.max(1) as f64;
        println!(
            "  cpu: load {} ms, gateway {} ms, broker {} ms = {:.1} / {:.1} / {:.1} us per message",
            d[0],
            d[1],
            d[2],
            per(d[0]),
            per(d[1]),
            per(d[2])
        );
    }
}

/// Runs one scenario and prints its report and the CPU time it cost.
async fn measured(procs: &Procs, run: impl std::future::Future<Output = Report>) -> Report {
    let cpu = procs.sample();
    let r = run.await;
    r.print();
    procs.print_since(cpu, r.delivered);
    r
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The limits the load needs (many clients, fast sources), as used by both child modes.
fn load_limits(cfg: &mut MqttSnConfig) {
    cfg.limits.max_clients = 5000;
    cfg.limits.rate_per_source = 100_000.0;
    cfg.limits.rate_burst = 100_000.0;
    cfg.limits.max_sources = 8192;
}

/// Child mode, whole gateway: a generated map, run by the pipeline until killed.
async fn pipeline_child(broker_port: u16, durability: &str) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("free UDP port");
    let port = udp.local_addr().expect("local addr").port();
    drop(udp);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut limits = MqttSnConfig::default();
    load_limits(&mut limits);
    let l = &limits.limits;
    let map = format!(
        "gateway: {{ id: load, data_dir: '{data}' }}\n\
         upstream: {{ url: 'mqtt://127.0.0.1:{broker_port}', max_inflight: {INFLIGHT} }}\n\
         buffer: {{ durability: {durability} }}\n\
         mqttsn:\n  bind: ['127.0.0.1:{port}']\n  limits: {{ max_clients: {mc}, rate_per_source: {r}, \
         rate_burst: {b}, max_sources: {ms} }}\n\
         devices: []\n",
        data = dir.path().join("data").display(),
        mc = l.max_clients,
        r = l.rate_per_source,
        b = l.rate_burst,
        ms = l.max_sources,
    );
    let path = dir.path().join("load.yaml");
    std::fs::write(&path, map).expect("write map");
    println!("PORT {port}");
    if let Err(e) = edgebus::pipeline::run(path).await {
        eprintln!("gateway: {e}");
        std::process::exit(1);
    }
}

/// Child mode, MQTT-SN side only: the gateway on a direct MQTT uplink until stdin closes.
async fn gateway_child(broker_port: u16) {
    let mut cfg = MqttSnConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        ..MqttSnConfig::default()
    };
    load_limits(&mut cfg);
    let b = Bound::bind(cfg).await.expect("bind");
    println!("PORT {}", b.local_addrs()[0].port());
    let (d, rx) = direct::connect("127.0.0.1", broker_port, "edgebus-mqttsn-load");
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for _ in std::io::stdin().lock().lines() {}
        s2.cancel();
    });
    b.run(d.clone(), d, rx, stop).await;
}

fn start_mosquitto() -> Option<(u16, std::process::Child, tempfile::TempDir)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
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
             max_queued_messages 1000000\nmax_inflight_messages 1000\n"
        ),
    )
    .ok()?;
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((port, child, dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// `--uplink`: `offline` (default), `always` or `direct`.
fn uplink() -> String {
    let u = arg("--uplink").unwrap_or_else(|| "offline".into());
    if !["offline", "always", "direct"].contains(&u.as_str()) {
        eprintln!("--uplink: offline, always or direct");
        std::process::exit(2);
    }
    u
}

fn main() {
    let threads: usize = arg("--threads").and_then(|s| s.parse().ok()).unwrap_or(2);
    if let Some(p) = arg("--gateway-child") {
        // The gateway process: `--threads 1` runs it on a single-threaded runtime.
        let rt = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
        }
        .expect("runtime");
        let port = p.parse().expect("port");
        match uplink().as_str() {
            "direct" => rt.block_on(gateway_child(port)),
            durability => rt.block_on(pipeline_child(port, durability)),
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(parent(threads));
}

async fn parent(threads: usize) {
    let scale: u32 = arg("--scale").and_then(|s| s.parse().ok()).unwrap_or(1);
    let only = arg("--only").unwrap_or_else(|| "q0,q1,lat".into());
    let wants = |name: &str| only.split(',').any(|o| o.trim() == name);
    let (port, _mosq) = match arg("--broker-port") {
        Some(p) => (p.parse().expect("port"), None),
        None => {
            let Some((p, child, dir)) = start_mosquitto() else {
                eprintln!("mosquitto not found: install it or pass --broker-port");
                std::process::exit(2);
            };
            (p, Some((KillOnDrop(child), dir)))
        }
    };
    let exe = std::env::current_exe().expect("exe");
    let mut child = tokio::process::Command::new(exe)
        .arg("--gateway-child")
        .arg(port.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--uplink")
        .arg(uplink())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway child");
    let pid = child.id().unwrap_or(0);
    let procs = Procs {
        gateway: pid,
        broker: _mosq.as_ref().map(|(c, _)| c.0.id()),
    };
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = out.next_line().await.ok().flatten().unwrap_or_default();
    let gw_port: u16 = line
        .trim_start_matches("PORT ")
        .parse()
        .expect("gateway port");
    let gw: SocketAddr = ([127, 0, 0, 1], gw_port).into();
    // The whole gateway opens its outbox before it binds: wait until it answers.
    let ready = Instant::now();
    while SnClient::open(gw, "load-probe", "load/probe")
        .await
        .is_none()
    {
        if ready.elapsed() > Duration::from_secs(20) {
            eprintln!("the gateway does not answer on {gw}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "gateway pid {pid} ({threads} runtime thread(s), uplink {}), RSS at start {} KiB",
        uplink(),
        rss_kb(pid)
    );

    // RSS with 1000 connected clients, before any load (afterwards the allocator keeps what
    // the load needed; that figure is printed at the end).
    let mut keep = Vec::new();
    for i in 0..1000 {
        if let Some(c) = SnClient::open(gw, &format!("idle-{i}"), &format!("load/idle/c{i}")).await
        {
            keep.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "gateway RSS with {} connected clients: {} KiB",
        keep.len(),
        rss_kb(pid)
    );

    if wants("q0") {
        // QoS 0, 10 clients
        let n0 = (10 * 3000 * scale) as usize;
        let c0 = measured(
            &procs,
            ceiling(port, "q0-ceiling", n0, rumqttc::QoS::AtMostOnce, 0.0),
        )
        .await;
        let per_client = 3000 * scale;
        measured(
            &procs,
            through_gateway(port, gw, "q0-max", 10, per_client, Qos::Zero, 0.0),
        )
        .await;
        let paced = 0.8 * c0.rate;
        let r = measured(
            &procs,
            through_gateway(port, gw, "q0-at-80pct", 10, per_client, Qos::Zero, paced),
        )
        .await;
        println!(
            "  -> QoS 0 at 80 % of the ceiling ({paced:.0} msg/s offered, {:.0} msg/s sent): \
             {:.0} msg/s delivered = {:.0} % of the ceiling, {} lost",
            r.send_rate.unwrap_or(0.0),
            r.rate,
            100.0 * r.rate / c0.rate.max(1.0),
            r.sent - r.delivered
        );
    }

    if wants("q1") {
        // QoS 1, 100 clients, one in flight each
        let n1 = (100 * 100 * scale) as usize;
        let c1 = measured(
            &procs,
            ceiling(port, "q1-ceiling", n1, rumqttc::QoS::AtLeastOnce, 0.0),
        )
        .await;
        let g1 = measured(
            &procs,
            through_gateway(port, gw, "q1-100clients", 100, 100 * scale, Qos::One, 0.0),
        )
        .await;
        println!(
            "  -> QoS 1 through the gateway: {:.0} % of the ceiling",
            100.0 * g1.rate / c1.rate.max(1.0)
        );
    }

    if wants("lat") {
        // latency at 5000 msg/s
        let d = ceiling(
            port,
            "lat-direct-5k",
            15_000,
            rumqttc::QoS::AtMostOnce,
            5000.0,
        )
        .await;
        d.print();
        let g = through_gateway(port, gw, "lat-gateway-5k", 10, 1500, Qos::Zero, 5000.0).await;
        g.print();
        println!(
            "  -> added latency at 5000 msg/s: p50 {:.2} ms, p99 {:.2} ms",
            g.p50 - d.p50,
            g.p99 - d.p99
        );
    }

    println!(
        "gateway RSS after the load, {} clients still connected: {} KiB",
        keep.len(),
        rss_kb(pid)
    );
    drop(child.stdin.take());
    if uplink() != "direct" {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
