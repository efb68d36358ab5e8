//! The sans-IO gateway: datagrams, broker messages, outbox verdicts and time go in;
//! datagrams, uplink publishes and upstream (un)subscriptions come out as [`Action`]s.
//!
//! One `Gateway` serves every transport (UDP sockets, serial lines), so clients share the
//! limits, the topic mapping and the upstream subscriptions wherever they come from.

mod client;
mod counters;
mod limits;
mod publish;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::{self, Datagram, Encapsulation, Packet, ReturnCode};
use super::config::MqttSnConfig;
use super::session::{Addr, Peer, Session};
use super::topics::Predefined;
pub use limits::{Bucket, RateLimiter};

/// What the I/O shell has to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these bytes (already encoded, forwarder header included) to a peer.
    Send { to: Peer, bytes: Vec<u8> },
    /// Send to the configured ADVERTISE address.
    Broadcast { bytes: Vec<u8> },
    /// Hand a message to the outbox. With a ticket, report the verdict with
    /// [`Gateway::uplink_result`]; without one (QoS 0/-1, wills) nobody waits for it.
    Publish {
        ticket: Option<u64>,
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
    },
    /// First client interested in this (upstream) filter, or a higher QoS is now wanted.
    Subscribe { filter: String, qos: u8 },
    /// Last client interested in this filter is gone.
    Unsubscribe { filter: String },
}

/// Why the outbox did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("outbox full")]
    Congestion,
    #[error("gateway shutting down")]
    Closed,
}

/// A client as seen from outside, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub addr: Addr,
    pub state: super::session::State,
    pub subscriptions: usize,
    pub held: usize,
}

pub(crate) fn count_drop(reason: &'static str) {
    metrics::counter!("edgebus_mqttsn_dropped_total", "reason" => reason).increment(1);
}

#[derive(Debug, Default)]
struct UpstreamSub {
    count: usize,
    qos: u8,
}

pub struct Gateway {
    cfg: MqttSnConfig,
    predefined: Predefined,
    sessions: HashMap<Addr, Session>,
    by_client: HashMap<Arc<str>, Addr>,
    upstream: HashMap<String, UpstreamSub>,
    tickets: HashMap<u64, Addr>,
    next_ticket: u64,
    rate: RateLimiter<Addr>,
    gwinfo: Bucket,
    next_advertise: Option<Instant>,
    out: VecDeque<Action>,
    /// Size of the datagram being handled and whether its source has a session: replies to
    /// an unverified source may not be larger than what it sent (no amplification).
    ctx_len: usize,
    ctx_verified: bool,
    counters: counters::Counters,
}

impl Gateway {
    pub fn new(cfg: MqttSnConfig, now: Instant) -> Gateway {
        let l = &cfg.limits;
        Gateway {
            predefined: Predefined::new(&cfg.predefined_topics),
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            upstream: HashMap::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            rate: RateLimiter::new(l.rate_per_source, l.rate_burst, l.max_sources, now),
            gwinfo: Bucket::new(l.gwinfo_per_second.max(1.0), now),
            next_advertise: cfg.advertise.as_ref().map(|_| now),
            out: VecDeque::new(),
            ctx_len: usize::MAX,
            ctx_verified: true,
            counters: counters::Counters::default(),
            cfg,
        }
    }

    pub fn config(&self) -> &MqttSnConfig {
        &self.cfg
    }

    /// Next thing for the shell to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self
            .sessions
            .iter()
            .map(|(a, s)| ClientInfo {
                client_id: s.client_id.to_string(),
                addr: a.clone(),
                state: s.state,
                subscriptions: s.subs.len(),
                held: s.queue.len(),
            })
            .collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    pub fn client(&self, id: &str) -> Option<ClientInfo> {
        self.clients().into_iter().find(|c| c.client_id == id)
    }

    /// Upstream filters currently subscribed, with their reference counts.
    pub fn upstream_subscriptions(&self) -> Vec<(String, usize, u8)> {
        let mut v: Vec<_> = self
            .upstream
            .iter()
            .map(|(f, s)| (f.clone(), s.count, s.qos))
            .collect();
        v.sort();
        v
    }

    /// One datagram from a transport.
    pub fn handle_datagram(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        self.counters.datagram();
        if bytes.len() > self.cfg.limits.max_packet_size {
            count_drop("too_large");
            tracing::debug!(peer = ?from, len = bytes.len(), "mqttsn: datagram above max_packet_size dropped");
            return;
        }
        let d = match codec::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                count_drop("malformed");
                tracing::debug!(peer = ?from, error = %e, "mqttsn: malformed datagram dropped");
                return;
            }
        };
        let addr = Addr {
            peer: from,
            node: d
                .encap
                .as_ref()
                .map(|e| e.node_id.clone().into_boxed_slice()),
        };
        if !self.rate.allow(&addr, now) {
            count_drop("rate_limited");
            return;
        }
        let ctrl = d.encap.as_ref().map(|e| e.ctrl).unwrap_or(0);
        self.ctx_len = bytes.len();
        self.ctx_verified = false;
        if let Some(s) = self.sessions.get_mut(&addr) {
            s.ctrl = ctrl;
            if s.state.is_connecting() {
                s.budget = s.budget.saturating_add(bytes.len());
                self.ctx_len = s.budget;
            } else {
                self.ctx_verified = true;
            }
        }
        self.dispatch(now, addr.clone(), ctrl, d.packet);
        if let Some(s) = self.sessions.get_mut(&addr)
            && s.state.is_connecting()
        {
            s.budget = self.ctx_len;
        }
        self.ctx_len = usize::MAX;
        self.ctx_verified = true;
    }

    fn dispatch(&mut self, now: Instant, addr: Addr, ctrl: u8, p: Packet) {
        self.counters.received(&p);
        match p {
            Packet::SearchGw { .. } => self.on_searchgw(now, &addr, ctrl),
            Packet::Advertise { .. } | Packet::GwInfo { .. } => {} // other gateways: ignored
            Packet::Connect {
                flags,
                protocol_id,
                duration,
                client_id,
            } => self.on_connect(now, addr, ctrl, flags, protocol_id, duration, client_id),
            Packet::Publish {
                flags,
                topic_id,
                msg_id,
                data,
            } if flags.qos == codec::Qos::MinusOne => {
                self.on_publish_minus_one(&addr, flags, topic_id, msg_id, data)
            }
            other => {
                let Some(s) = self.sessions.get_mut(&addr) else {
                    self.no_session(&addr, ctrl, &other);
                    return;
                };
                s.last_seen = now;
                if !matches!(other, Packet::Connect { .. }) && !s.state.is_connecting() {
                    s.verified = true;
                }
                self.on_session_packet(now, addr, other);
            }
        }
    }

    fn on_session_packet(&mut self, now: Instant, addr: Addr, p: Packet) {
        match p {
            Packet::WillTopic { will } => self.on_will_topic(now, &addr, will),
            Packet::WillMsg { msg } => self.on_will_msg(now, &addr, msg),
            Packet::WillTopicUpd { will } => self.on_will_topic_upd(&addr, will),
            Packet::WillMsgUpd { msg } => self.on_will_msg_upd(&addr, msg),
            Packet::PingReq { client_id } => self.on_pingreq(now, &addr, client_id),
            Packet::Disconnect { duration } => self.on_disconnect(now, &addr, duration),
            Packet::Register { msg_id, topic, .. } => self.on_register(&addr, msg_id, topic),
            Packet::RegAck { msg_id, rc, .. } => self.on_regack(now, &addr, msg_id, rc),
            Packet::Publish {
                flags,
                topic_id,
                msg_id,
                data,
            } => self.on_publish(&addr, flags, topic_id, msg_id, data),
            Packet::PubAck { msg_id, .. } => self.on_puback(now, &addr, msg_id),
            Packet::PubRec { msg_id } => self.on_pubrec(now, &addr, msg_id),
            Packet::PubRel { msg_id } => self.on_pubrel(&addr, msg_id),
            Packet::PubComp { msg_id } => self.on_pubcomp(now, &addr, msg_id),
            Packet::Subscribe {
                qos, msg_id, topic, ..
            } => self.on_subscribe(now, &addr, qos, msg_id, topic),
            Packet::Unsubscribe { msg_id, topic } => self.on_unsubscribe(&addr, msg_id, topic),
            Packet::PingResp => {}
            other => {
                count_drop("unexpected_type");
                tracing::debug!(addr = %addr, kind = other.name(), "mqttsn: unexpected message from client");
            }
        }
    }

    /// A packet that needs a session from a source that has none: tell it to reconnect
    /// (DISCONNECT is 2 bytes, never more than what came in).
    fn no_session(&mut self, addr: &Addr, ctrl: u8, p: &Packet) {
        count_drop("no_session");
        if matches!(
            p,
            Packet::Publish { .. }
                | Packet::Register { .. }
                | Packet::Subscribe { .. }
                | Packet::Unsubscribe { .. }
                | Packet::PingReq { .. }
        ) {
            self.send_raw(addr, ctrl, &Packet::Disconnect { duration: None });
        }
    }

    fn on_searchgw(&mut self, now: Instant, addr: &Addr, ctrl: u8) {
        let rate = self.cfg.limits.gwinfo_per_second;
        if !self.gwinfo.take(rate, rate.max(1.0), now) {
            count_drop("gwinfo_rate");
            return;
        }
        let p = Packet::GwInfo {
            gw_id: self.cfg.gateway_id,
            gw_addr: Vec::new(),
        };
        self.send_raw(addr, ctrl, &p);
    }

    /// Encodes and queues a packet to `addr`, applying the anti-amplification rule.
    fn send_raw(&mut self, addr: &Addr, ctrl: u8, p: &Packet) {
        let d = Datagram {
            encap: addr.node.as_ref().map(|n| Encapsulation {
                ctrl,
                node_id: n.to_vec(),
            }),
            packet: p.clone(),
        };
        let mut bytes = Vec::new();
        if let Err(e) = codec::encode(&d, &mut bytes) {
            count_drop("encode");
            tracing::warn!(addr = %addr, error = %e, "mqttsn: cannot encode reply");
            return;
        }
        if !self.ctx_verified {
            if bytes.len() > self.ctx_len {
                count_drop("amplification");
                return;
            }
            self.ctx_len -= bytes.len();
        }
        self.counters.sent(p);
        if return_code(p) == Some(ReturnCode::Congestion) {
            metrics::counter!("edgebus_mqttsn_congestion_total").increment(1);
        }
        self.out.push_back(Action::Send {
            to: addr.peer,
            bytes,
        });
    }

    /// Sends to a client with a session (uses its forwarder ctrl octet).
    fn send(&mut self, addr: &Addr, p: &Packet) {
        let ctrl = self.sessions.get(addr).map(|s| s.ctrl).unwrap_or(0);
        self.send_raw(addr, ctrl, p);
    }

    fn upstream_topic(&self, topic: &str) -> String {
        if self.cfg.topic_prefix.is_empty() {
            topic.to_string()
        } else {
            format!("{}/{}", self.cfg.topic_prefix, topic)
        }
    }

    fn local_topic<'a>(&self, upstream: &'a str) -> Option<&'a str> {
        if self.cfg.topic_prefix.is_empty() {
            return Some(upstream);
        }
        upstream
            .strip_prefix(self.cfg.topic_prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
    }

    /// Timers: keep-alive and sleep expiry, handshake timeouts, retransmissions, ADVERTISE.
    /// Call it a few times per second.
    pub fn handle_tick(&mut self, now: Instant) {
        if let (Some(next), Some(adv)) = (self.next_advertise, self.cfg.advertise.clone())
            && now >= next
        {
            let p = Packet::Advertise {
                gw_id: self.cfg.gateway_id,
                duration: u16::try_from(adv.interval.as_secs()).unwrap_or(u16::MAX),
            };
            if let Ok(bytes) = codec::encode_to_vec(&p) {
                self.out.push_back(Action::Broadcast { bytes });
            }
            self.next_advertise = Some(now + adv.interval.max(Duration::from_secs(1)));
        }
        let handshake = self.cfg.retry_interval;
        let expired: Vec<Addr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expiry(handshake).is_some_and(|t| now >= t))
            .map(|(a, _)| a.clone())
            .collect();
        for a in expired {
            let (connecting, id) = match self.sessions.get(&a) {
                Some(s) => (s.state.is_connecting(), s.client_id.clone()),
                None => continue,
            };
            if connecting {
                tracing::debug!(client = %id, addr = %a, "mqttsn: handshake timed out");
                self.remove_session(&a);
            } else {
                tracing::info!(client = %id, addr = %a, "mqttsn: client lost (keep-alive expired)");
                metrics::counter!("edgebus_mqttsn_clients_lost_total").increment(1);
                self.lose(&a);
            }
        }
        self.retransmit(now);
    }
}

/// The return code a reply carries, if its type has one.
fn return_code(p: &Packet) -> Option<ReturnCode> {
    match p {
        Packet::ConnAck { rc }
        | Packet::RegAck { rc, .. }
        | Packet::PubAck { rc, .. }
        | Packet::SubAck { rc, .. }
        | Packet::WillTopicResp { rc }
        | Packet::WillMsgResp { rc } => Some(*rc),
        _ => None,
    }
}
