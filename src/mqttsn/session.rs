//! Per-client state. The gateway drives it; this file holds the data and the small pure
//! rules (expiry, id allocation, bounded queues) that do not need to see other sessions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::{Packet, Qos};
use super::topics::TopicTable;

/// Where a client lives: the transport peer plus, behind a forwarder, the radio node id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub peer: Peer,
    pub node: Option<Box<[u8]>>,
}

impl Addr {
    pub fn udp(a: std::net::SocketAddr) -> Addr {
        Addr {
            peer: Peer::Udp(a),
            node: None,
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.peer {
            Peer::Udp(a) => write!(f, "{a}")?,
            Peer::Serial(i) => write!(f, "serial#{i}")?,
        }
        if let Some(n) = &self.node {
            write!(f, "/node:")?;
            for b in n.iter() {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A transport endpoint datagrams come from and go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Udp(std::net::SocketAddr),
    /// Index of a serial line.
    Serial(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// CONNECT with will: waiting for WILLTOPIC.
    WaitWillTopic,
    /// WILLTOPIC received: waiting for WILLMSG.
    WaitWillMsg,
    Active,
    /// Sleeping until the deadline (1.5 x the announced duration); messages are held.
    Asleep {
        until: Instant,
    },
    /// Woke with PINGREQ: held messages are flushed, then PINGRESP, then asleep again.
    Awake {
        until: Instant,
    },
    /// Persistent (clean session off) client gone: subscriptions kept, messages held.
    Disconnected,
}

impl State {
    pub fn is_connecting(self) -> bool {
        matches!(self, State::WaitWillTopic | State::WaitWillMsg)
    }
    /// May the client's own requests (publish, subscribe ...) be served?
    pub fn is_serving(self) -> bool {
        matches!(self, State::Active | State::Awake { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
}

/// A subscription as the client made it (MQTT-SN side, without the topic prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: Arc<str>,
    pub qos: Qos,
    /// Subscribed by predefined id: deliveries on exactly that topic use the id.
    pub predefined: Option<u16>,
}

/// A broker message waiting to go down to the client.
#[derive(Debug, Clone)]
pub struct Down {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
}

/// A gateway-initiated message waiting for the client's answer.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet: Packet,
    pub sent_at: Instant,
    pub retries: u32,
    pub stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    RegAck { msg_id: u16 },
    PubAck { msg_id: u16 },
    PubRec { msg_id: u16 },
    PubComp { msg_id: u16 },
}

/// An uplink QoS 1/2 publish handed to the outbox, waiting for its verdict.
#[derive(Debug, Clone, Copy)]
pub struct PendingUp {
    pub ticket: u64,
    pub msg_id: u16,
    pub topic_id: u16,
    pub qos: Qos,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    pub state: State,
    pub clean: bool,
    pub keep_alive: Duration,
    /// Announced sleep period (DISCONNECT with duration).
    pub sleep: Duration,
    pub last_seen: Instant,
    pub connected_at: Instant,
    /// Sent something after CONNACK (a spoofed CONNECT alone does not get there).
    pub verified: bool,
    /// During the will handshake: bytes received minus bytes sent, so replies to a source
    /// that may be spoofed never add up to more than it sent.
    pub budget: usize,
    /// Forwarder ctrl octet to echo back.
    pub ctrl: u8,
    pub will: Option<Will>,
    pub pending_will: Option<(String, Qos, bool)>,
    /// Allowed topic prefixes (MQTT-SN side); `None` = any.
    pub allowed: Option<Arc<[String]>>,
    pub topics: TopicTable,
    pub subs: Vec<Subscription>,
    pub up_pending: VecDeque<PendingUp>,
    /// QoS 1 msg ids recently acknowledged, to answer a DUP without publishing twice.
    pub up_recent: VecDeque<u16>,
    /// QoS 2 msg ids acknowledged with PUBREC, awaiting PUBREL.
    pub up_released: VecDeque<u16>,
    pub queue: VecDeque<Down>,
    pub inflight: Option<Inflight>,
    next_msg_id: u16,
}

/// How many recent QoS 1 ids are remembered for duplicate detection.
const RECENT: usize = 16;

impl Session {
    pub fn new(client_id: Arc<str>, now: Instant) -> Session {
        Session {
            client_id,
            state: State::Active,
            clean: true,
            keep_alive: Duration::ZERO,
            sleep: Duration::ZERO,
            last_seen: now,
            connected_at: now,
            verified: false,
            budget: 0,
            ctrl: 0,
            will: None,
            pending_will: None,
            allowed: None,
            topics: TopicTable::default(),
            subs: Vec::new(),
            up_pending: VecDeque::new(),
            up_recent: VecDeque::new(),
            up_released: VecDeque::new(),
            queue: VecDeque::new(),
            inflight: None,
            next_msg_id: 0,
        }
    }

    pub fn next_msg_id(&mut self) -> u16 {
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        if self.next_msg_id == 0 {
            self.next_msg_id = 1;
        }
        self.next_msg_id
    }

    /// When the session is considered lost if nothing more is heard. A keep-alive of 0
    /// is read as the largest one (18 h) so a silent client is still freed some day.
    pub fn expiry(&self, handshake_timeout: Duration) -> Option<Instant> {
        let ka = if self.keep_alive.is_zero() {
            Duration::from_secs(u64::from(u16::MAX))
        } else {
            self.keep_alive
        };
        match self.state {
            State::WaitWillTopic | State::WaitWillMsg => Some(self.last_seen + handshake_timeout),
            State::Active => Some(self.last_seen + ka.mul_f32(1.5)),
            State::Asleep { until } | State::Awake { until } => Some(until),
            State::Disconnected => None,
        }
    }

    /// Holds a message for later, dropping the oldest beyond `max`. Returns true if one
    /// was dropped.
    pub fn hold(&mut self, d: Down, max: usize) -> bool {
        let mut dropped = false;
        while self.queue.len() >= max.max(1) {
            self.queue.pop_front();
            dropped = true;
        }
        self.queue.push_back(d);
        dropped
    }

    pub fn remember_acked(&mut self, msg_id: u16) {
        if self.up_recent.len() >= RECENT {
            self.up_recent.pop_front();
        }
        self.up_recent.push_back(msg_id);
    }

    pub fn remember_released(&mut self, msg_id: u16, max: usize) {
        if self.up_released.contains(&msg_id) {
            return;
        }
        if self.up_released.len() >= max.max(1) {
            self.up_released.pop_front();
        }
        self.up_released.push_back(msg_id);
    }

    pub fn allows(&self, topic_or_filter: &str) -> bool {
        match &self.allowed {
            None => true,
            Some(p) => p
                .iter()
                .any(|p| super::topics::filter_within(topic_or_filter, p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_skip_zero() {
        let mut s = Session::new("c".into(), Instant::now());
        s.next_msg_id = u16::MAX - 1;
        assert_eq!(s.next_msg_id(), u16::MAX);
        assert_eq!(s.next_msg_id(), 1);
    }

    #[test]
    fn hold_is_bounded() {
        let mut s = Session::new("c".into(), Instant::now());
        let d = |n: u8| Down {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos: Qos::Zero,
            retain: false,
        };
        assert!(!s.hold(d(1), 2));
        assert!(!s.hold(d(2), 2));
        assert!(s.hold(d(3), 2));
        let kept: Vec<u8> = s.queue.iter().map(|d| d.payload[0]).collect();
        assert_eq!(kept, [2, 3]);
    }

    #[test]
    fn expiry_is_one_and_a_half_keep_alive() {
        let t0 = Instant::now();
        let mut s = Session::new("c".into(), t0);
        s.keep_alive = Duration::from_secs(10);
        assert_eq!(
            s.expiry(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(15))
        );
        s.state = State::WaitWillTopic;
        assert_eq!(
            s.expiry(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(5))
        );
        s.state = State::Disconnected;
        assert_eq!(s.expiry(Duration::from_secs(5)), None);
        s.state = State::Active;
        s.keep_alive = Duration::ZERO;
        assert!(s.expiry(Duration::from_secs(5)).unwrap() > t0 + Duration::from_secs(3600));
    }

    #[test]
    fn allowed_prefixes() {
        let mut s = Session::new("c".into(), Instant::now());
        assert!(s.allows("anything"));
        s.allowed = Some(vec!["site/c/".to_string()].into());
        assert!(s.allows("site/c/t"));
        assert!(s.allows("site/c/#"));
        assert!(!s.allows("site/#"));
        assert!(!s.allows("other"));
    }
}
