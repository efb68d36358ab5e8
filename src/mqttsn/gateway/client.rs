//! Connection life: CONNECT and the will handshake, will updates, ping, sleep, loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, Gateway, count_drop};
use crate::mqttsn::codec::{Flags, Packet, ReturnCode, WillTopic};
use crate::mqttsn::session::{Addr, Session, State, Will};
use crate::mqttsn::topics;

const MAX_CLIENT_ID: usize = 23;

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_connect(
        &mut self,
        now: Instant,
        addr: Addr,
        ctrl: u8,
        flags: Flags,
        protocol_id: u8,
        duration: u16,
        client_id: String,
    ) {
        let refuse = |gw: &mut Gateway, rc: ReturnCode, why: &'static str| {
            count_drop(why);
            tracing::info!(client = %client_id, addr = %addr, reason = why, "mqttsn: CONNECT refused");
            gw.send_raw(&addr, ctrl, &Packet::ConnAck { rc });
        };
        if protocol_id != 0x01 || client_id.is_empty() || client_id.len() > MAX_CLIENT_ID {
            return refuse(self, ReturnCode::NotSupported, "bad_connect");
        }
        if let Some(allow) = &self.cfg.allow_clients
            && !allow.contains(&client_id)
        {
            return refuse(self, ReturnCode::NotSupported, "not_allowed");
        }
        let id: Arc<str> = client_id.as_str().into();
        // A different client at this address: that one is gone.
        if self.sessions.get(&addr).is_some_and(|s| s.client_id != id) {
            self.end_session(&addr);
        }
        // The same client at another address (new port, new forwarder): take it over.
        let previous = match self.by_client.get(&id).cloned() {
            Some(old) if old != addr => {
                let s = self.sessions.remove(&old);
                self.by_client.remove(&id);
                self.retarget_tickets(&old, &addr);
                s
            }
            Some(_) => {
                let s = self.sessions.remove(&addr);
                self.by_client.remove(&id);
                s
            }
            None => None,
        };
        if previous.is_none()
            && self.sessions.len() >= self.cfg.limits.max_clients
            && !self.evict_one()
        {
            return refuse(self, ReturnCode::Congestion, "too_many_clients");
        }
        let mut s = match previous {
            Some(mut s) if !flags.clean_session && !s.clean => {
                s.last_seen = now;
                s
            }
            Some(mut s) => {
                self.drop_subscriptions(&mut s);
                Session::new(id.clone(), now)
            }
            None => Session::new(id.clone(), now),
        };
        s.clean = flags.clean_session;
        s.keep_alive = Duration::from_secs(u64::from(duration));
        s.connected_at = now;
        s.last_seen = now;
        s.verified = false;
        s.ctrl = ctrl;
        s.allowed = self.allowed_prefixes(&client_id);
        s.pending_will = None;
        if !flags.will {
            s.will = None;
        }
        s.state = if flags.will {
            State::WaitWillTopic
        } else {
            State::Active
        };
        let will = flags.will;
        self.by_client.insert(id.clone(), addr.clone());
        self.sessions.insert(addr.clone(), s);
        metrics::gauge!("edgebus_mqttsn_clients").set(self.sessions.len() as f64);
        if will {
            self.send(&addr, &Packet::WillTopicReq);
        } else {
            tracing::info!(client = %id, addr = %addr, "mqttsn: client connected");
            self.send(
                &addr,
                &Packet::ConnAck {
                    rc: ReturnCode::Accepted,
                },
            );
            self.pump(now, &addr);
        }
    }

    fn allowed_prefixes(&self, client_id: &str) -> Option<Arc<[String]>> {
        let list = self
            .cfg
            .client_topics
            .get(client_id)
            .or_else(|| self.cfg.client_topics.get("*"))?;
        Some(
            list.iter()
                .map(|p| p.replace("{client}", client_id))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// Makes room for a new client: a half-open handshake first, then a persistent
    /// session that is gone, then a client that never spoke after its CONNECT (what a
    /// spoofed CONNECT looks like); the oldest of the kind. False if all are real.
    fn evict_one(&mut self) -> bool {
        let pick = |pred: &dyn Fn(&Session) -> bool, gw: &Gateway| {
            gw.sessions
                .iter()
                .filter(|(_, s)| pred(s))
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(a, _)| a.clone())
        };
        let victim = pick(&|s| s.state.is_connecting(), self)
            .or_else(|| pick(&|s| s.state == State::Disconnected, self))
            .or_else(|| pick(&|s| !s.verified && s.state == State::Active, self));
        match victim {
            Some(a) => {
                count_drop("evicted");
                tracing::info!(addr = %a, "mqttsn: session evicted to make room");
                self.remove_session(&a);
                true
            }
            None => false,
        }
    }

    pub(super) fn on_will_topic(&mut self, now: Instant, addr: &Addr, will: Option<WillTopic>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        if s.state != State::WaitWillTopic {
            count_drop("unexpected_type");
            return;
        }
        match will {
            None => {
                s.will = None;
                s.state = State::Active;
                self.send(
                    addr,
                    &Packet::ConnAck {
                        rc: ReturnCode::Accepted,
                    },
                );
                self.pump(now, addr);
            }
            Some(w) => {
                if !topics::valid_name(&w.topic) || !s.allows(&w.topic) {
                    count_drop("will_topic_refused");
                    self.send(
                        addr,
                        &Packet::ConnAck {
                            rc: ReturnCode::NotSupported,
                        },
                    );
                    self.remove_session(addr);
                    return;
                }
                s.pending_will = Some((w.topic, w.qos, w.retain));
                s.state = State::WaitWillMsg;
                self.send(addr, &Packet::WillMsgReq);
            }
        }
    }

    pub(super) fn on_will_msg(&mut self, now: Instant, addr: &Addr, msg: Vec<u8>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        if s.state != State::WaitWillMsg {
            count_drop("unexpected_type");
            return;
        }
        if let Some((topic, qos, retain)) = s.pending_will.take() {
            s.will = Some(Will {
                topic,
                payload: Bytes::from(msg),
                qos,
                retain,
            });
        }
        s.state = State::Active;
        tracing::info!(client = %s.client_id, addr = %addr, "mqttsn: client connected with will");
        self.send(
            addr,
            &Packet::ConnAck {
                rc: ReturnCode::Accepted,
            },
        );
        self.pump(now, addr);
    }

    pub(super) fn on_will_topic_upd(&mut self, addr: &Addr, will: Option<WillTopic>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        let rc = match will {
            None => {
                s.will = None;
                ReturnCode::Accepted
            }
            Some(w) if topics::valid_name(&w.topic) && s.allows(&w.topic) => {
                let payload = s.will.take().map(|w| w.payload).unwrap_or_default();
                s.will = Some(Will {
                    topic: w.topic,
                    payload,
                    qos: w.qos,
                    retain: w.retain,
                });
                ReturnCode::Accepted
            }
            Some(_) => ReturnCode::NotSupported,
        };
        self.send(addr, &Packet::WillTopicResp { rc });
    }

    pub(super) fn on_will_msg_upd(&mut self, addr: &Addr, msg: Vec<u8>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        let rc = match &mut s.will {
            Some(w) => {
                w.payload = Bytes::from(msg);
                ReturnCode::Accepted
            }
            None => ReturnCode::NotSupported,
        };
        self.send(addr, &Packet::WillMsgResp { rc });
    }

    pub(super) fn on_pingreq(&mut self, now: Instant, addr: &Addr, client_id: Option<String>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        match (s.state, client_id) {
            (State::Asleep { .. }, Some(id)) if *id == *s.client_id => {
                // Held messages go out now; PINGRESP follows once they are through.
                let until = now + s.keep_alive_sleep();
                s.state = State::Awake { until };
                self.pump(now, addr);
            }
            (State::Asleep { .. }, _) => {
                count_drop("ping_wrong_client");
            }
            (st, _) if st.is_serving() => {
                if matches!(st, State::Awake { .. }) {
                    self.pump(now, addr);
                } else {
                    self.send(addr, &Packet::PingResp);
                }
            }
            _ => count_drop("unexpected_type"),
        }
    }

    pub(super) fn on_disconnect(&mut self, now: Instant, addr: &Addr, duration: Option<u16>) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        match duration {
            Some(d) if d > 0 => {
                let sleep = Duration::from_secs(u64::from(d));
                s.sleep = sleep;
                s.state = State::Asleep {
                    until: now + sleep.mul_f32(1.5),
                };
                tracing::debug!(client = %s.client_id, secs = d, "mqttsn: client asleep");
                self.send(addr, &Packet::Disconnect { duration: None });
            }
            _ => {
                tracing::info!(client = %s.client_id, addr = %addr, "mqttsn: client disconnected");
                self.send(addr, &Packet::Disconnect { duration: None });
                self.end_session(addr);
            }
        }
    }

    /// Keep-alive expired or retransmissions exhausted: publish the will, then end.
    pub(super) fn lose(&mut self, addr: &Addr) {
        let will = self.sessions.get_mut(addr).and_then(|s| s.will.take());
        if let Some(w) = will {
            let topic = self.upstream_topic(&w.topic);
            tracing::info!(topic = %topic, "mqttsn: publishing will");
            self.out.push_back(Action::Publish {
                ticket: None,
                topic,
                payload: w.payload,
                qos: w.qos.as_mqtt(),
                retain: w.retain,
            });
        }
        self.end_session(addr);
    }

    /// Orderly end: a persistent session stays (held messages, subscriptions), a clean one
    /// is freed.
    pub(super) fn end_session(&mut self, addr: &Addr) {
        match self.sessions.get_mut(addr) {
            Some(s) if !s.clean && !s.state.is_connecting() => {
                s.state = State::Disconnected;
                s.inflight = None;
                s.will = None;
            }
            Some(_) => self.remove_session(addr),
            None => {}
        }
    }

    /// Frees everything a session holds, including its share of upstream subscriptions.
    pub(super) fn remove_session(&mut self, addr: &Addr) {
        if let Some(mut s) = self.sessions.remove(addr) {
            self.drop_subscriptions(&mut s);
            for p in &s.up_pending {
                self.tickets.remove(&p.ticket);
            }
            if self.by_client.get(&s.client_id) == Some(addr) {
                self.by_client.remove(&s.client_id);
            }
        }
        metrics::gauge!("edgebus_mqttsn_clients").set(self.sessions.len() as f64);
    }

    fn retarget_tickets(&mut self, old: &Addr, new: &Addr) {
        for a in self.tickets.values_mut() {
            if a == old {
                *a = new.clone();
            }
        }
    }
}

impl Session {
    /// Sleep period for the next wake-up deadline (the announced one).
    fn keep_alive_sleep(&self) -> Duration {
        self.sleep.mul_f32(1.5)
    }
}
