//! The tokio shell around [`Gateway`]: UDP sockets (IPv4 and IPv6), serial lines, a timer,
//! the outbox verdicts and broker deliveries. All protocol decisions live in the gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gateway::{Action, Gateway};
use super::{Delivery, Downlink, MqttSnConfig, Peer, Uplink};
use crate::message::{Message, QoS};

#[derive(Debug, thiserror::Error)]
pub enum MqttSnError {
    #[error("mqttsn: cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqttsn: cannot open serial port {port}: {source}")]
    Serial {
        port: String,
        source: tokio_serial::Error,
    },
    #[error("mqttsn: invalid configuration: {0}")]
    Config(String),
}

/// How often timers are looked at (keep-alive, retransmission, ADVERTISE).
const TICK: Duration = Duration::from_millis(100);

/// Binds the configured sockets (and serial port) and returns the local UDP addresses,
/// useful when binding port 0 in tests.
pub struct Bound {
    sockets: Vec<Arc<UdpSocket>>,
    serial: Option<tokio_serial::SerialStream>,
    cfg: MqttSnConfig,
}

impl Bound {
    pub async fn bind(cfg: MqttSnConfig) -> Result<Bound, MqttSnError> {
        let errs = cfg.validate();
        if !errs.is_empty() {
            let text: Vec<String> = errs.iter().map(|(p, m)| format!("{p}: {m}")).collect();
            return Err(MqttSnError::Config(text.join("; ")));
        }
        let mut sockets = Vec::new();
        for addr in &cfg.bind {
            let s = UdpSocket::bind(addr)
                .await
                .map_err(|source| MqttSnError::Bind {
                    addr: *addr,
                    source,
                })?;
            if cfg.advertise.is_some() {
                let _ = s.set_broadcast(true);
            }
            grow_receive_buffer(&s);
            sockets.push(Arc::new(s));
        }
        let serial = match &cfg.serial {
            None => None,
            Some(sc) => {
                use tokio_serial::SerialPortBuilderExt;
                let s = tokio_serial::new(&sc.port, sc.baud)
                    .open_native_async()
                    .map_err(|source| MqttSnError::Serial {
                        port: sc.port.clone(),
                        source,
                    })?;
                Some(s)
            }
        };
        Ok(Bound {
            sockets,
            serial,
            cfg,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(
        self,
        uplink: Arc<dyn Uplink>,
        downlink: Arc<dyn Downlink>,
        deliveries: mpsc::Receiver<Delivery>,
        shutdown: CancellationToken,
    ) {
        let mut serial_links = Vec::new();
        if let Some(s) = self.serial {
            serial_links.push(s);
        }
        serve(
            self.cfg,
            self.sockets,
            serial_links,
            uplink,
            downlink,
            deliveries,
            shutdown,
        )
        .await
    }
}

/// Binds and serves until `shutdown` is cancelled.
pub async fn run(
    cfg: MqttSnConfig,
    uplink: Arc<dyn Uplink>,
    downlink: Arc<dyn Downlink>,
    deliveries: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
) -> Result<(), MqttSnError> {
    let b = Bound::bind(cfg).await?;
    for a in b.local_addrs() {
        tracing::info!(addr = %a, "mqttsn: listening");
    }
    b.run(uplink, downlink, deliveries, shutdown).await;
    Ok(())
}

/// The event loop over any number of sockets and serial-like streams.
pub async fn serve<S>(
    cfg: MqttSnConfig,
    sockets: Vec<Arc<UdpSocket>>,
    serial: Vec<S>,
    uplink: Arc<dyn Uplink>,
    downlink: Arc<dyn Downlink>,
    mut deliveries: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max = cfg.limits.max_packet_size;
    let advertise_to = cfg.advertise.as_ref().map(|a| a.address);
    let (in_tx, mut in_rx) = mpsc::channel::<(Peer, Vec<u8>)>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    // The first socket is read in the main loop (no task hop); any others by tasks.
    let primary = sockets.first().cloned();
    for s in sockets.iter().skip(1) {
        let (s, tx, stop) = (s.clone(), in_tx.clone(), shutdown.clone());
        tasks.spawn(async move {
            // One byte more than allowed, so an oversized datagram is seen as such.
            let mut buf = vec![0u8; max + 1];
            loop {
                let r = tokio::select! {
                    r = s.recv_from(&mut buf) => r,
                    _ = stop.cancelled() => return,
                };
                match r {
                    Ok((n, from)) => {
                        if tx.send((Peer::Udp(from), buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    // ICMP port unreachable from an earlier send shows up here on Linux.
                    Err(e) => tracing::debug!(error = %e, "mqttsn: UDP receive error"),
                }
            }
        });
    }
    let mut serial_tx = HashMap::new();
    for (i, stream) in serial.into_iter().enumerate() {
        let idx = u16::try_from(i).unwrap_or(u16::MAX);
        let (tx, rx) = mpsc::channel(256);
        serial_tx.insert(idx, tx);
        let (in_tx, stop) = (in_tx.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                r = super::serial::run_link(stream, idx, max, in_tx, rx) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, line = idx, "mqttsn: serial link failed");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
    drop(in_tx);

    let sockets: Vec<(Arc<UdpSocket>, SocketAddr)> = sockets
        .into_iter()
        .filter_map(|s| {
            let l = s.local_addr().ok()?;
            Some((s, l))
        })
        .collect();
    let mut gw = Gateway::new(cfg, Instant::now());
    // One byte more than allowed, so an oversized datagram is seen as such.
    let mut inbox = super::udp_batch::RecvBatch::new(max + 1);
    let mut pending = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deliveries_open = true;
    let mut udp_out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = readable(primary.as_deref()) => {
                if let Some(s) = &primary {
                    // Drain what is queued before acting, to batch under load.
                    let mut taken = 0;
                    while taken < 256 {
                        match inbox.try_recv(s) {
                            Ok(n) => {
                                let now = Instant::now();
                                for i in 0..n {
                                    if let Some((from, d)) = inbox.get(i) {
                                        gw.handle_datagram(now, Peer::Udp(from), d);
                                    }
                                }
                                taken += n.max(1);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            // ICMP port unreachable from an earlier send shows up here on Linux.
                            Err(e) => {
                                tracing::debug!(error = %e, "mqttsn: UDP receive error");
                                break;
                            }
                        }
                    }
                }
            }
            Some((peer, bytes)) = in_rx.recv() => {
                gw.handle_datagram(Instant::now(), peer, &bytes);
                // Take what is already queued before acting, to batch under load.
                while let Ok((peer, bytes)) = in_rx.try_recv() {
                    gw.handle_datagram(Instant::now(), peer, &bytes);
                    if pending.len() > 4096 { break; }
                }
            }
            Some((ticket, result)) = pending.next(), if !pending.is_empty() => {
                on_verdict(&mut gw, ticket, result);
                // Verdicts come in bursts (the outbox made room for many waiting clients):
                // take the ready ones now, so their answers go out together.
                while let Some(Some((ticket, result))) = pending.next().now_or_never() {
                    on_verdict(&mut gw, ticket, result);
                }
            }
            d = deliveries.recv(), if deliveries_open => match d {
                Some(d) => gw.deliver(Instant::now(), &d.topic, d.payload, d.qos.as_u8(), d.retain),
                None => deliveries_open = false,
            },
            _ = tick.tick() => gw.handle_tick(Instant::now()),
        }
        while let Some(a) = gw.poll_action() {
            // Datagrams are collected and sent together; anything else sends them first, so
            // the order of actions holds.
            let a = match a {
                Action::Send {
                    to: Peer::Udp(addr),
                    bytes,
                } => {
                    udp_out.push((addr, bytes));
                    continue;
                }
                other => other,
            };
            send_udp(&sockets, &mut udp_out).await;
            match a {
                Action::Send {
                    to: Peer::Serial(line),
                    bytes,
                } => send_serial(&serial_tx, line, bytes),
                // Taken above.
                Action::Send {
                    to: Peer::Udp(_), ..
                } => {}
                Action::Broadcast { bytes } => {
                    for tx in serial_tx.values() {
                        let _ = tx.try_send(bytes.clone());
                    }
                    if let Some(to) = advertise_to {
                        udp_out.push((to, bytes));
                    }
                }
                Action::Publish {
                    ticket,
                    topic,
                    payload,
                    qos,
                    retain,
                } => {
                    let qos = QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce);
                    let mut fut = uplink.publish(Message::new(topic, payload, qos, retain));
                    // Most verdicts are ready at once (QoS 0, outbox in memory): no task hop.
                    match (&mut fut).now_or_never() {
                        Some(r) => on_verdict(&mut gw, ticket, r),
                        None => pending.push(async move { (ticket, fut.await) }),
                    }
                }
                Action::Subscribe { filter, qos } => {
                    downlink.subscribe(&filter, QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce));
                }
                Action::Unsubscribe { filter } => downlink.unsubscribe(&filter),
            }
        }
        send_udp(&sockets, &mut udp_out).await;
    }
    tasks.abort_all();
}

/// Resolves when the socket has something to read; never without a socket.
async fn readable(s: Option<&UdpSocket>) {
    match s {
        Some(s) => {
            if s.readable().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The outbox's verdict: to the client if it waits for one, else only counted.
fn on_verdict(gw: &mut Gateway, ticket: Option<u64>, r: Result<(), super::Rejected>) {
    match ticket {
        Some(t) => gw.uplink_result(t, r),
        None => {
            if let Err(e) = r {
                super::gateway::count_drop("outbox_rejected_qos0");
                tracing::debug!(error = %e, "mqttsn: outbox refused a QoS 0 publish");
            }
        }
    }
}

/// The socket to send to `addr` from, and the address in that socket's family: a socket of
/// the peer's family is preferred; a dual-stack [::] socket takes both.
fn udp_route(
    sockets: &[(Arc<UdpSocket>, SocketAddr)],
    addr: SocketAddr,
) -> Option<(usize, SocketAddr)> {
    let i = sockets
        .iter()
        .position(|(_, l)| l.is_ipv4() == addr.is_ipv4())
        .or((!sockets.is_empty()).then_some(0))?;
    let target = match (addr, sockets[i].1) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    };
    Some((i, target))
}

/// Sends the collected datagrams, a run per socket in one system call where it can, in order;
/// waits only when a socket's send buffer is full.
async fn send_udp(sockets: &[(Arc<UdpSocket>, SocketAddr)], out: &mut Vec<(SocketAddr, Vec<u8>)>) {
    let mut i = 0;
    while i < out.len() {
        let Some((sock, _)) = udp_route(sockets, out[i].0) else {
            break;
        };
        let mut run: Vec<(SocketAddr, &[u8])> = Vec::new();
        for (addr, bytes) in &out[i..] {
            match udp_route(sockets, *addr) {
                Some((s, target)) if s == sock => run.push((target, bytes)),
                _ => break,
            }
        }
        i += run.len();
        let s = &sockets[sock].0;
        let mut done = 0;
        while done < run.len() {
            match super::udp_batch::try_send_batch(s, &run[done..]) {
                Ok(n) => done += n,
                Err(_) => {
                    // Send buffer full: wait for room with this one datagram.
                    let (to, bytes) = run[done];
                    if let Err(e) = s.send_to(bytes, to).await {
                        super::gateway::count_drop("udp_send_error");
                        tracing::debug!(peer = %to, error = %e, "mqttsn: UDP send failed");
                    }
                    done += 1;
                }
            }
        }
    }
    out.clear();
}

/// Queues a frame for a serial line; a line that cannot keep up loses it (counted).
fn send_serial(serial: &HashMap<u16, mpsc::Sender<Vec<u8>>>, line: u16, bytes: Vec<u8>) {
    if let Some(tx) = serial.get(&line)
        && tx.try_send(bytes).is_err()
    {
        super::gateway::count_drop("serial_backlog");
    }
}

/// Asks for a 1 MiB receive buffer so a burst from many nodes waits in the kernel instead of
/// being dropped there (the kernel caps it at net.core.rmem_max; failure is harmless).
fn grow_receive_buffer(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 1 << 20;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!("mqttsn: could not enlarge the UDP receive buffer");
    }
}
