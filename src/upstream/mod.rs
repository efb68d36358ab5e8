//! Upstream: the one MQTT connection to the broker (rumqttc), fed by the outbox.
//!
//! Delivery rule: a message leaves the outbox only on its PUBACK (QoS 1) / PUBCOMP (QoS 2), or
//! once written to the socket (QoS 0). Packet ids are matched to outbox rows by
//! [`tracker::Tracker`]. Sessions are clean, so after every (re)connect the outbox rewinds and
//! every unacknowledged row is sent again, in order: at-least-once, with duplicates bounded by
//! the in-flight window.

mod config;
mod conn;
mod tls;
mod tracker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{BrokerUrl, Protocol, Scheme, TlsConfig, UpstreamConfig};
pub use tracker::{Backoff, Tag, Tracker};

use crate::message::QoS;
use crate::outbox::Outbox;
use conn::{Conn, Ev, Spec};

/// Errors building the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid upstream config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("password_file {0}: {1}")]
    PasswordFile(String, std::io::Error),
}

/// A message from the broker (downlink).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// Connection figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStatus {
    pub connected: bool,
    /// Successful connections since start.
    pub connects: u64,
    /// Connection attempts that failed or connections that were lost.
    pub failures: u64,
    /// Publishes awaiting acknowledgement now.
    pub in_flight: usize,
    /// Outbox messages handed to the broker (may include re-sends after a reconnect).
    pub published: u64,
    /// Outbox messages acknowledged by the broker.
    pub acked: u64,
    /// Messages the broker refused for good (MQTT 5 reason codes) or that can never be sent
    /// (invalid topic, too large): removed from the outbox and counted here.
    pub rejected: u64,
    /// Downlink messages dropped because the consumer was not keeping up.
    pub downlink_dropped: u64,
    pub last_error: Option<String>,
}

enum Cmd {
    Subscribe(String, QoS),
    Unsubscribe(String),
}

struct HandleShared {
    subs: Mutex<BTreeMap<String, QoS>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    sinks: Mutex<Vec<mpsc::Sender<Incoming>>>,
    status: Mutex<UpstreamStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cheap handle for subscriptions, downlink and status.
#[derive(Clone)]
pub struct UpstreamHandle {
    shared: Arc<HandleShared>,
}

/// QoS 2 publishes in flight at most (below mosquitto's default receive maximum of 20).
pub const QOS2_WINDOW: usize = 16;

/// Capacity of each downlink receiver.
pub const DOWNLINK_QUEUE: usize = 1024;

/// Connection events handled in one go before the in-flight window is refilled.
const EVENT_BATCH: usize = 256;

/// Free room in the in-flight window that makes a refill worth a write while messages are in
/// flight (a quarter of the window).
fn refill_chunk(window: usize) -> usize {
    (window / 4).max(1)
}

/// How often the outbox is looked at without a wake-up.
const RECHECK: Duration = Duration::from_millis(500);

impl UpstreamHandle {
    /// Subscribes now (when connected) and after every reconnect.
    pub fn subscribe(&self, filter: String, qos: QoS) {
        lock(&self.shared.subs).insert(filter.clone(), qos);
        let _ = self.shared.cmds.send(Cmd::Subscribe(filter, qos));
    }

    pub fn unsubscribe(&self, filter: String) {
        lock(&self.shared.subs).remove(&filter);
        let _ = self.shared.cmds.send(Cmd::Unsubscribe(filter));
    }

    /// A new `mpsc` receiver of every message the broker sends us (each receiver gets every
    /// message). Bounded ([`DOWNLINK_QUEUE`]): when a receiver falls behind, messages for it are
    /// dropped and counted (`downlink_dropped`) rather than stalling the connection.
    pub fn incoming(&self) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(DOWNLINK_QUEUE);
        lock(&self.shared.sinks).push(tx);
        rx
    }

    pub fn status(&self) -> UpstreamStatus {
        lock(&self.shared.status).clone()
    }

    fn update(&self, f: impl FnOnce(&mut UpstreamStatus)) {
        f(&mut lock(&self.shared.status));
    }

    fn deliver(&self, m: Incoming) {
        let mut sinks = lock(&self.shared.sinks);
        sinks.retain(|s| !s.is_closed());
        let mut dropped = 0;
        for s in sinks.iter() {
            if s.try_send(m.clone()).is_err() {
                dropped += 1;
            }
        }
        drop(sinks);
        if dropped > 0 {
            metrics::counter!("edgebus_upstream_downlink_dropped_total").increment(dropped);
            self.update(|s| s.downlink_dropped += dropped);
        }
    }
}

/// The connection manager. Build with [`Upstream::new`], drive with [`Upstream::run`].
pub struct Upstream {
    spec: Spec,
    status_topic: String,
    outbox: Outbox,
    handle: UpstreamHandle,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    backoff: Backoff,
}

/// Why a publish can never succeed (so it must not block the queue forever).
fn unsendable(topic: &str, payload_len: usize) -> Option<&'static str> {
    if topic.is_empty() {
        Some("empty topic")
    } else if topic.contains(['+', '#', '\0']) {
        Some("wildcard or NUL in topic")
    } else if topic.len() > 65535 {
        Some("topic too long")
    } else if topic.len() + payload_len + 16 > conn::MAX_PACKET {
        Some("message too large")
    } else {
        None
    }
}

enum End {
    Shutdown,
    Lost,
}

impl Upstream {
    pub fn new(
        cfg: &UpstreamConfig,
        status_topic: String,
        client_id: String,
        outbox: Outbox,
    ) -> Result<(Upstream, UpstreamHandle), UpstreamError> {
        if let Some((path, msg)) = cfg.validate().into_iter().next() {
            return Err(UpstreamError::Config(format!("{path}: {msg}")));
        }
        let url = BrokerUrl::parse(&cfg.url).map_err(UpstreamError::Config)?;
        let transport = if url.scheme.is_tls() {
            let tls = tls::client_config(&cfg.tls.clone().unwrap_or_default())?;
            let tc = rumqttc::TlsConfiguration::Rustls(tls);
            if url.scheme == Scheme::Wss {
                rumqttc::Transport::Wss(tc)
            } else {
                rumqttc::Transport::Tls(tc)
            }
        } else if url.scheme == Scheme::Ws {
            rumqttc::Transport::Ws
        } else {
            rumqttc::Transport::Tcp
        };
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => Some(p.expose().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| UpstreamError::PasswordFile(f.display().to_string(), e))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => url.password.clone(),
        };
        let username = cfg.username.clone().or_else(|| url.username.clone());
        let credentials = match (username, password) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, Some(_)) => {
                return Err(UpstreamError::Config(
                    "password given without username".into(),
                ));
            }
            (None, None) => None,
        };
        let spec = Spec {
            url,
            protocol: cfg.protocol,
            transport,
            client_id: cfg.client_id.clone().unwrap_or(client_id),
            keep_alive: cfg.keep_alive,
            connect_timeout: cfg.connect_timeout,
            credentials,
            will_topic: status_topic.clone(),
            inflight: cfg.max_inflight,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let handle = UpstreamHandle {
            shared: Arc::new(HandleShared {
                subs: Mutex::new(BTreeMap::new()),
                cmds: cmd_tx,
                sinks: Mutex::new(Vec::new()),
                status: Mutex::new(UpstreamStatus::default()),
            }),
        };
        Ok((
            Upstream {
                spec,
                status_topic,
                outbox,
                handle: handle.clone(),
                cmds: cmd_rx,
                backoff: Backoff::new(cfg.reconnect_min, cfg.reconnect_max),
            },
            handle,
        ))
    }

    /// Runs until `shutdown`; then publishes `offline` (retained) to the status topic and
    /// disconnects cleanly. Unacknowledged messages stay in the outbox.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut said_buffering = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let conn = conn::open(&self.spec);
            match self.session(conn, &shutdown, &mut said_buffering).await {
                End::Shutdown => break,
                End::Lost => {}
            }
            let delay = self.backoff.next(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.outbox.set_connected(false);
        self.handle.update(|s| s.connected = false);
    }

    fn fail(&self, error: String, said_buffering: &mut bool, was_connected: bool) {
        self.outbox.set_connected(false);
        metrics::counter!("edgebus_upstream_connection_failures_total").increment(1);
        if was_connected || !*said_buffering {
            tracing::warn!(
                broker = %self.spec.url.host,
                port = self.spec.url.port,
                error = %error,
                depth = self.outbox.stats().depth,
                "broker unreachable; buffering in the outbox and retrying"
            );
            *said_buffering = true;
        } else {
            tracing::debug!(error = %error, "broker still unreachable");
        }
        self.handle.update(|s| {
            s.connected = false;
            s.failures += 1;
            s.in_flight = 0;
            s.last_error = Some(error);
        });
    }

    async fn session(
        &mut self,
        mut conn: Conn,
        shutdown: &CancellationToken,
        said_buffering: &mut bool,
    ) -> End {
        // Connect.
        loop {
            tokio::select! {
                ev = conn.events.recv() => match ev {
                    Some(Ev::ConnAck) => break,
                    Some(Ev::Closed(e)) => {
                        self.fail(e, said_buffering, false);
                        return End::Lost;
                    }
                    None => {
                        self.fail("connection task ended".into(), said_buffering, false);
                        return End::Lost;
                    }
                    Some(_) => {}
                },
                _ = shutdown.cancelled() => return End::Shutdown,
            }
        }
        let since = Instant::now();
        tracing::info!(
            broker = %self.spec.url.host,
            port = self.spec.url.port,
            backlog = self.outbox.stats().depth,
            "connected to the broker"
        );
        *said_buffering = false;
        self.backoff.reset();
        metrics::counter!("edgebus_upstream_connects_total").increment(1);
        self.handle.update(|s| {
            s.connected = true;
            s.connects += 1;
        });
        // Every unacknowledged message goes again, in order.
        self.outbox.rewind();
        self.outbox.set_connected(true);
        let mut t = Tracker::default();
        // Drop commands queued while disconnected: the subscription map is the truth.
        while self.cmds.try_recv().is_ok() {}
        let mut setup: Vec<Result<(), String>> = vec![conn.client.publish(
            &self.status_topic,
            QoS::AtLeastOnce,
            true,
            Bytes::from_static(b"online"),
        )];
        t.requested(Tag::Status, QoS::AtLeastOnce);
        let subs: Vec<(String, QoS)> = lock(&self.handle.shared.subs)
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        for (f, q) in subs {
            setup.push(conn.client.subscribe(&f, q));
        }
        if let Some(Err(e)) = setup.into_iter().find(|r| r.is_err()) {
            self.fail(e, said_buffering, true);
            return End::Lost;
        }
        let window = self.spec.inflight as usize;
        let mut held: VecDeque<crate::message::Message> = VecDeque::new();
        // Looks at the outbox now and then even without a wake-up (deletes committed, a
        // missed notification); one timer for the connection.
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            // Fill the window from the outbox. Acknowledged rows not yet deleted on disk count
            // too: after a crash they come back, and duplicates must stay within the window.
            // QoS 2 has its own, smaller cap; a held message waits in order.
            loop {
                while let Some(m) = held.front() {
                    if m.qos == QoS::ExactlyOnce && t.outstanding_qos2() >= QOS2_WINDOW {
                        break;
                    }
                    let Some(m) = held.pop_front() else { break };
                    if let Some(why) = unsendable(&m.topic, m.payload.len()) {
                        tracing::error!(topic = %m.topic, seq = m.seq, why, "message can never be published; dropped");
                        metrics::counter!("edgebus_upstream_rejected_total").increment(1);
                        self.outbox.ack(m.seq);
                        self.handle.update(|s| s.rejected += 1);
                        continue;
                    }
                    if let Err(e) = conn.client.publish(&m.topic, m.qos, m.retain, m.payload) {
                        self.fail(format!("publish queue: {e}"), said_buffering, true);
                        return End::Lost;
                    }
                    t.requested(Tag::Msg(m.seq), m.qos);
                    self.handle.update(|s| s.published += 1);
                }
                let busy = t.outstanding() + held.len() + self.outbox.uncommitted_acks();
                if !held.is_empty() || busy >= window {
                    break;
                }
                // Under load the broker's acknowledgements arrive a few at a time; refilling
                // for each few costs a write (and a read at the broker) per two or three
                // messages. While most of the window waits for the broker, wait until a
                // quarter of it is free: the broker stays busy and each write carries a
                // quarter window. (QoS 0 leaves the window when written: no waiting for it.)
                if t.awaiting_broker() > 0 && window - busy < refill_chunk(window) {
                    break;
                }
                let batch = self.outbox.next_batch(window - busy);
                if batch.is_empty() {
                    break;
                }
                held.extend(batch);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.goodbye(conn, t).await;
                    return End::Shutdown;
                }
                ev = conn.events.recv() => {
                    let Some(ev) = ev else {
                        self.fail("connection task ended".into(), said_buffering, true);
                        return End::Lost;
                    };
                    // Take the events already queued before refilling the window: under load
                    // acknowledgements arrive in bursts, and one refill serves the burst.
                    let mut ev = ev;
                    for _ in 0..EVENT_BATCH {
                        if let Some(e) = self.on_event(ev, &mut t) {
                            tracing::debug!(up_for = ?since.elapsed(), "connection lost");
                            self.fail(e, said_buffering, true);
                            return End::Lost;
                        }
                        match conn.events.try_recv() {
                            Ok(next) => ev = next,
                            Err(_) => break,
                        }
                    }
                }
                cmd = self.cmds.recv() => {
                    let r = match cmd {
                        Some(Cmd::Subscribe(f, q)) => conn.client.subscribe(&f, q),
                        Some(Cmd::Unsubscribe(f)) => conn.client.unsubscribe(&f),
                        None => Ok(()),
                    };
                    if let Err(e) = r {
                        self.fail(e, said_buffering, true);
                        return End::Lost;
                    }
                }
                // Also wakes when deletes are committed (room in the window again).
                _ = self.outbox.sendable() => {}
                _ = &mut recheck => {
                    recheck.as_mut().reset(tokio::time::Instant::now() + RECHECK);
                }
            }
        }
    }

    /// Handles one event; returns the error when the connection ended.
    fn on_event(&self, ev: Ev, t: &mut Tracker) -> Option<String> {
        match ev {
            Ev::Written(pkid) => {
                if let Some(Tag::Msg(seq)) = t.written(pkid) {
                    self.outbox.ack(seq);
                    self.handle.update(|s| s.acked += 1);
                }
            }
            Ev::Acked(pkid) => {
                if let Some(Tag::Msg(seq)) = t.acked(pkid) {
                    self.outbox.ack(seq);
                    self.handle.update(|s| s.acked += 1);
                }
            }
            Ev::Refused {
                pkid,
                reason,
                permanent,
            } => {
                if let Some(Tag::Msg(seq)) = t.acked(pkid) {
                    if permanent {
                        tracing::error!(seq, reason = %reason, "broker refused the message; dropped");
                        metrics::counter!("edgebus_upstream_rejected_total").increment(1);
                        self.outbox.ack(seq);
                        self.handle.update(|s| s.rejected += 1);
                    } else {
                        tracing::warn!(seq, reason = %reason, "broker refused the message for now; it is sent again after the next reconnect");
                    }
                }
            }
            Ev::Message(m) => self.handle.deliver(m),
            Ev::ConnAck => {}
            Ev::Closed(e) => return Some(e),
        }
        self.handle.update(|s| s.in_flight = t.outstanding());
        None
    }

    /// Graceful end: `offline` (retained, acknowledged or 2 s), then DISCONNECT.
    async fn goodbye(&self, mut conn: Conn, mut t: Tracker) {
        if conn
            .client
            .publish(
                &self.status_topic,
                QoS::AtLeastOnce,
                true,
                Bytes::from_static(b"offline"),
            )
            .is_ok()
        {
            t.requested(Tag::Status, QoS::AtLeastOnce);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while t.status_pending() {
                match tokio::time::timeout_at(deadline, conn.events.recv()).await {
                    Ok(Some(ev)) => {
                        if self.on_event(ev, &mut t).is_some() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        conn.client.disconnect();
        conn.finish(Duration::from_secs(1)).await;
        self.outbox.set_connected(false);
        self.handle.update(|s| {
            s.connected = false;
            s.in_flight = 0;
        });
        tracing::info!("disconnected from the broker");
    }
}
