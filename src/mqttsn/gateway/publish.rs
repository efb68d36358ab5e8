//! Topics and messages: REGISTER, PUBLISH in both directions, SUBSCRIBE, retransmission.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Action, Gateway, Rejected, UpstreamSub, count_drop};
use crate::mqttsn::codec::{Flags, Packet, Qos, ReturnCode, TopicIdType, TopicRef};
use crate::mqttsn::session::{Addr, Down, Inflight, PendingUp, Stage, State, Subscription};
use crate::mqttsn::topics;

fn short_name(id: u16) -> Option<String> {
    String::from_utf8(id.to_be_bytes().to_vec()).ok()
}

impl Gateway {
    /// Topic name of a client's PUBLISH (MQTT-SN side), if the id is known.
    fn resolve(&self, addr: &Addr, tt: TopicIdType, id: u16) -> Option<Arc<str>> {
        match tt {
            TopicIdType::Predefined => self.predefined.name(id).cloned(),
            TopicIdType::Short => short_name(id).map(Arc::from),
            TopicIdType::Normal => self.sessions.get(addr)?.topics.name(id).cloned(),
        }
    }

    pub(super) fn on_publish_minus_one(
        &mut self,
        addr: &Addr,
        flags: Flags,
        topic_id: u16,
        _msg_id: u16,
        data: Vec<u8>,
    ) {
        if !self.cfg.qos_minus_one || flags.topic_id_type == TopicIdType::Normal {
            count_drop("qos_minus_one_refused");
            return;
        }
        let Some(topic) = self.resolve(addr, flags.topic_id_type, topic_id) else {
            count_drop("unknown_topic_id");
            return;
        };
        let topic = self.upstream_topic(&topic);
        self.counters.uplink(Qos::MinusOne);
        self.out.push_back(Action::Publish {
            ticket: None,
            topic,
            payload: Bytes::from(data),
            qos: 0,
            retain: flags.retain,
        });
    }

    pub(super) fn on_register(&mut self, addr: &Addr, msg_id: u16, topic: String) {
        let limit = self.cfg.limits.max_topics_per_client;
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        if !s.state.is_serving() {
            return count_drop("unexpected_type");
        }
        let (topic_id, rc) = if !topics::valid_name(&topic) || !s.allows(&topic) {
            (0, ReturnCode::NotSupported)
        } else {
            match s.topics.register(&topic, limit, &self.predefined) {
                Ok(id) => (id, ReturnCode::Accepted),
                Err(_) => {
                    count_drop("topic_table_full");
                    (0, ReturnCode::Congestion)
                }
            }
        };
        self.send(
            addr,
            &Packet::RegAck {
                topic_id,
                msg_id,
                rc,
            },
        );
    }

    pub(super) fn on_publish(
        &mut self,
        addr: &Addr,
        flags: Flags,
        topic_id: u16,
        msg_id: u16,
        data: Vec<u8>,
    ) {
        let max_inflight = self.cfg.limits.max_inflight;
        let topic = self.resolve(addr, flags.topic_id_type, topic_id);
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        if !s.state.is_serving() {
            return count_drop("unexpected_type");
        }
        let puback = |gw: &mut Gateway, rc| {
            gw.send(
                addr,
                &Packet::PubAck {
                    topic_id,
                    msg_id,
                    rc,
                },
            );
        };
        let Some(topic) = topic else {
            count_drop("unknown_topic_id");
            return puback(self, ReturnCode::InvalidTopicId);
        };
        if !s.allows(&topic) {
            count_drop("topic_not_allowed");
            return puback(self, ReturnCode::NotSupported);
        }
        // Duplicates: answered again, never published twice.
        if flags.qos != Qos::Zero && s.up_pending.iter().any(|p| p.msg_id == msg_id) {
            return count_drop("duplicate");
        }
        if flags.qos == Qos::One && flags.dup && s.up_recent.contains(&msg_id) {
            count_drop("duplicate");
            return puback(self, ReturnCode::Accepted);
        }
        if flags.qos == Qos::Two && s.up_released.contains(&msg_id) {
            count_drop("duplicate");
            return self.send(addr, &Packet::PubRec { msg_id });
        }
        let ticket = if flags.qos == Qos::Zero {
            None
        } else {
            if s.up_pending.len() >= max_inflight {
                count_drop("inflight_full");
                return puback(self, ReturnCode::Congestion);
            }
            self.next_ticket += 1;
            let t = self.next_ticket;
            s.up_pending.push_back(PendingUp {
                ticket: t,
                msg_id,
                topic_id,
                qos: flags.qos,
            });
            self.tickets.insert(t, addr.clone());
            Some(t)
        };
        self.counters.uplink(flags.qos);
        let topic = self.upstream_topic(&topic);
        self.out.push_back(Action::Publish {
            ticket,
            topic,
            payload: Bytes::from(data),
            qos: flags.qos.as_mqtt(),
            retain: flags.retain,
        });
    }

    /// The outbox's verdict on a ticketed publish: now the client gets its PUBACK/PUBREC.
    pub fn uplink_result(&mut self, ticket: u64, result: Result<(), Rejected>) {
        let max_inflight = self.cfg.limits.max_inflight;
        let Some(addr) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let Some(i) = s.up_pending.iter().position(|p| p.ticket == ticket) else {
            return;
        };
        let Some(p) = s.up_pending.remove(i) else {
            return;
        };
        let reply = match (result, p.qos) {
            (Ok(()), Qos::Two) => {
                s.remember_released(p.msg_id, max_inflight);
                Packet::PubRec { msg_id: p.msg_id }
            }
            (Ok(()), _) => {
                s.remember_acked(p.msg_id);
                Packet::PubAck {
                    topic_id: p.topic_id,
                    msg_id: p.msg_id,
                    rc: ReturnCode::Accepted,
                }
            }
            (Err(e), _) => {
                count_drop("outbox_rejected");
                tracing::warn!(client = %s.client_id, error = %e, "mqttsn: outbox refused a publish");
                Packet::PubAck {
                    topic_id: p.topic_id,
                    msg_id: p.msg_id,
                    rc: ReturnCode::Congestion,
                }
            }
        };
        // A sleeping client gets no datagram now; it retries with DUP after waking.
        if s.state.is_serving() {
            self.ctx_verified = true;
            self.send(&addr, &reply);
        }
    }

    pub(super) fn on_pubrel(&mut self, addr: &Addr, msg_id: u16) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        s.up_released.retain(|m| *m != msg_id);
        self.send(addr, &Packet::PubComp { msg_id });
    }

    pub(super) fn on_subscribe(
        &mut self,
        now: Instant,
        addr: &Addr,
        qos: Qos,
        msg_id: u16,
        topic: TopicRef,
    ) {
        let limits = self.cfg.limits.clone();
        let name = match &topic {
            TopicRef::Name(n) => Some(Arc::<str>::from(n.as_str())),
            TopicRef::Predefined(id) => self.predefined.name(*id).cloned(),
            TopicRef::Short(b) => short_name(u16::from_be_bytes(*b)).map(Arc::from),
        };
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        if !s.state.is_serving() {
            return count_drop("unexpected_type");
        }
        let suback = |gw: &mut Gateway, topic_id, rc| {
            gw.send(
                addr,
                &Packet::SubAck {
                    qos: if qos == Qos::MinusOne { Qos::Zero } else { qos },
                    topic_id,
                    msg_id,
                    rc,
                },
            );
        };
        let Some(name) = name else {
            return suback(self, 0, ReturnCode::InvalidTopicId);
        };
        if qos == Qos::MinusOne || !topics::valid_filter(&name) || !s.allows(&name) {
            count_drop("subscribe_refused");
            return suback(self, 0, ReturnCode::NotSupported);
        }
        let existing = s.subs.iter().position(|x| *x.filter == *name);
        if existing.is_none() && s.subs.len() >= limits.max_subscriptions_per_client {
            count_drop("too_many_subscriptions");
            return suback(self, 0, ReturnCode::Congestion);
        }
        let topic_id = match &topic {
            TopicRef::Predefined(id) => *id,
            TopicRef::Short(_) => 0,
            TopicRef::Name(n) if n.contains(['+', '#']) || n.len() == 2 => 0,
            TopicRef::Name(n) => {
                match s
                    .topics
                    .register(n, limits.max_topics_per_client, &self.predefined)
                {
                    Ok(id) => id,
                    Err(_) => {
                        count_drop("topic_table_full");
                        return suback(self, 0, ReturnCode::Congestion);
                    }
                }
            }
        };
        let sub = Subscription {
            filter: name.clone(),
            qos,
            predefined: match topic {
                TopicRef::Predefined(id) => Some(id),
                _ => None,
            },
        };
        match existing {
            Some(i) => s.subs[i] = sub,
            None => s.subs.push(sub),
        }
        let upstream = self.upstream_topic(&name);
        self.upstream_ref(upstream, qos.as_mqtt(), existing.is_none());
        suback(self, topic_id, ReturnCode::Accepted);
        let _ = now;
    }

    fn upstream_ref(&mut self, filter: String, qos: u8, new_ref: bool) {
        let e = self
            .upstream
            .entry(filter.clone())
            .or_insert(UpstreamSub { count: 0, qos: 0 });
        let first = e.count == 0;
        if new_ref {
            e.count += 1;
        }
        if first || qos > e.qos {
            e.qos = e.qos.max(qos);
            let qos = e.qos;
            self.out.push_back(Action::Subscribe { filter, qos });
        }
    }

    fn upstream_unref(&mut self, filter: String) {
        if let Some(e) = self.upstream.get_mut(&filter) {
            e.count = e.count.saturating_sub(1);
            if e.count == 0 {
                self.upstream.remove(&filter);
                self.out.push_back(Action::Unsubscribe { filter });
            }
        }
    }

    pub(super) fn on_unsubscribe(&mut self, addr: &Addr, msg_id: u16, topic: TopicRef) {
        let name: Option<Arc<str>> = match &topic {
            TopicRef::Name(n) => Some(n.as_str().into()),
            TopicRef::Predefined(id) => self.predefined.name(*id).cloned(),
            TopicRef::Short(b) => short_name(u16::from_be_bytes(*b)).map(Arc::from),
        };
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        let removed = name.and_then(|n| {
            let i = s.subs.iter().position(|x| *x.filter == *n)?;
            Some(s.subs.remove(i))
        });
        if let Some(sub) = removed {
            let f = self.upstream_topic(&sub.filter);
            self.upstream_unref(f);
        }
        self.send(addr, &Packet::UnsubAck { msg_id });
    }

    /// Gives back a session's share of the upstream subscriptions.
    pub(super) fn drop_subscriptions(&mut self, s: &mut crate::mqttsn::session::Session) {
        for sub in std::mem::take(&mut s.subs) {
            let f = self.upstream_topic(&sub.filter);
            self.upstream_unref(f);
        }
    }

    /// A message from the broker (topic as upstream knows it): queue it for every client
    /// with a matching subscription, at the lower of the message's and the granted QoS.
    pub fn deliver(&mut self, now: Instant, topic: &str, payload: Bytes, qos: u8, retain: bool) {
        let Some(local) = self.local_topic(topic) else {
            return;
        };
        let local: Arc<str> = local.into();
        let max_held = self.cfg.limits.max_held;
        let mut targets = Vec::new();
        for (a, s) in self.sessions.iter_mut() {
            if s.state.is_connecting() {
                continue;
            }
            let granted = s
                .subs
                .iter()
                .filter(|x| topics::matches(&x.filter, &local))
                .map(|x| x.qos)
                .max();
            let Some(granted) = granted else { continue };
            let q = granted.min(Qos::from_mqtt(qos));
            if s.hold(
                Down {
                    topic: local.clone(),
                    payload: payload.clone(),
                    qos: q,
                    retain,
                },
                max_held,
            ) {
                count_drop("held_overflow");
            }
            targets.push(a.clone());
        }
        for a in targets {
            self.pump(now, &a);
        }
    }

    /// Sends queued messages while nothing is in flight; registers topic ids first.
    pub(super) fn pump(&mut self, now: Instant, addr: &Addr) {
        let limit = self.cfg.limits.max_topics_per_client;
        loop {
            let Some(s) = self.sessions.get_mut(addr) else {
                return;
            };
            if !s.state.is_serving() || s.inflight.is_some() {
                return;
            }
            let Some(front) = s.queue.front().cloned() else {
                if let State::Awake { until } = s.state {
                    // Everything held went out: back to sleep.
                    s.state = State::Asleep { until };
                    self.send(addr, &Packet::PingResp);
                }
                return;
            };
            let pre = s.subs.iter().filter_map(|x| x.predefined).find(|id| {
                self.predefined
                    .name(*id)
                    .is_some_and(|n| **n == *front.topic)
            });
            let (tt, topic_id) = if let Some(id) = pre {
                (TopicIdType::Predefined, id)
            } else if front.topic.len() == 2 {
                let b = front.topic.as_bytes();
                (TopicIdType::Short, u16::from_be_bytes([b[0], b[1]]))
            } else if let Some(id) = s.topics.id(&front.topic) {
                (TopicIdType::Normal, id)
            } else {
                match s.topics.register(&front.topic, limit, &self.predefined) {
                    Ok(id) => {
                        let msg_id = s.next_msg_id();
                        let p = Packet::Register {
                            topic_id: id,
                            msg_id,
                            topic: front.topic.to_string(),
                        };
                        s.inflight = Some(Inflight {
                            packet: p.clone(),
                            sent_at: now,
                            retries: 0,
                            stage: Stage::RegAck { msg_id },
                        });
                        self.send(addr, &p);
                    }
                    Err(_) => {
                        count_drop("topic_table_full");
                        s.queue.pop_front();
                        continue;
                    }
                }
                return;
            };
            s.queue.pop_front();
            let msg_id = if front.qos == Qos::Zero {
                0
            } else {
                s.next_msg_id()
            };
            let p = Packet::Publish {
                flags: Flags {
                    qos: front.qos,
                    retain: front.retain,
                    topic_id_type: tt,
                    ..Flags::default()
                },
                topic_id,
                msg_id,
                data: front.payload.to_vec(),
            };
            let stage = match front.qos {
                Qos::One => Some(Stage::PubAck { msg_id }),
                Qos::Two => Some(Stage::PubRec { msg_id }),
                _ => None,
            };
            if let Some(stage) = stage {
                s.inflight = Some(Inflight {
                    packet: p.clone(),
                    sent_at: now,
                    retries: 0,
                    stage,
                });
            }
            metrics::counter!("edgebus_mqttsn_downlink_total").increment(1);
            self.send(addr, &p);
        }
    }

    /// Clears the in-flight message if `stage` is what it waits for.
    fn settle(&mut self, now: Instant, addr: &Addr, stage: Stage) -> bool {
        let Some(s) = self.sessions.get_mut(addr) else {
            return false;
        };
        if s.inflight.as_ref().is_some_and(|i| i.stage == stage) {
            s.inflight = None;
            self.pump(now, addr);
            true
        } else {
            false
        }
    }

    pub(super) fn on_regack(&mut self, now: Instant, addr: &Addr, msg_id: u16, rc: ReturnCode) {
        if rc != ReturnCode::Accepted
            && let Some(s) = self.sessions.get_mut(addr)
            && s.inflight
                .as_ref()
                .is_some_and(|i| i.stage == Stage::RegAck { msg_id })
        {
            // The client will not take this topic: drop the message that needed it.
            count_drop("regack_refused");
            s.queue.pop_front();
        }
        self.settle(now, addr, Stage::RegAck { msg_id });
    }

    pub(super) fn on_puback(&mut self, now: Instant, addr: &Addr, msg_id: u16) {
        if !self.settle(now, addr, Stage::PubAck { msg_id }) {
            // PUBACK refusing a QoS 2 message
            self.settle(now, addr, Stage::PubRec { msg_id });
        }
    }

    pub(super) fn on_pubrec(&mut self, now: Instant, addr: &Addr, msg_id: u16) {
        let Some(s) = self.sessions.get_mut(addr) else {
            return;
        };
        let waiting = s.inflight.as_ref().map(|i| i.stage);
        if matches!(waiting, Some(Stage::PubRec { msg_id: m }) | Some(Stage::PubComp { msg_id: m }) if m == msg_id)
        {
            let p = Packet::PubRel { msg_id };
            s.inflight = Some(Inflight {
                packet: p.clone(),
                sent_at: now,
                retries: 0,
                stage: Stage::PubComp { msg_id },
            });
            self.send(addr, &p);
        }
    }

    pub(super) fn on_pubcomp(&mut self, now: Instant, addr: &Addr, msg_id: u16) {
        self.settle(now, addr, Stage::PubComp { msg_id });
    }

    /// Resends unanswered gateway messages (PUBLISH with DUP); gives up on the client after
    /// `retry_count` tries.
    pub(super) fn retransmit(&mut self, now: Instant) {
        let (interval, count) = (self.cfg.retry_interval, self.cfg.retry_count);
        let mut resend = Vec::new();
        let mut lost = Vec::new();
        for (a, s) in self.sessions.iter_mut() {
            if !s.state.is_serving() {
                continue;
            }
            let Some(i) = s.inflight.as_mut() else {
                continue;
            };
            if now.saturating_duration_since(i.sent_at) < interval {
                continue;
            }
            if i.retries >= count {
                lost.push(a.clone());
                continue;
            }
            i.retries += 1;
            i.sent_at = now;
            if let Packet::Publish { flags, .. } = &mut i.packet {
                flags.dup = true;
            }
            resend.push((a.clone(), i.packet.clone()));
        }
        for (a, p) in resend {
            metrics::counter!("edgebus_mqttsn_retransmissions_total").increment(1);
            self.send(&a, &p);
        }
        for a in lost {
            tracing::info!(addr = %a, "mqttsn: client lost (no answer to retransmissions)");
            self.lose(&a);
        }
    }
}
