use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::mqttsn::codec::{Flags, Qos, ReturnCode, TopicIdType, TopicRef, WillTopic, decode};
use crate::mqttsn::config::MqttSnConfig;
use crate::mqttsn::session::State;

struct T {
    gw: Gateway,
    now: Instant,
    /// Non-Send actions seen so far.
    actions: Vec<Action>,
}

fn peer(n: u16) -> Peer {
    Peer::Udp(std::net::SocketAddr::from(([10, 0, 0, 1], n)))
}

fn addr(n: u16) -> Addr {
    Addr {
        peer: peer(n),
        node: None,
    }
}

impl T {
    fn new(f: impl FnOnce(&mut MqttSnConfig)) -> T {
        let mut cfg = MqttSnConfig::default();
        f(&mut cfg);
        let now = Instant::now();
        T {
            gw: Gateway::new(cfg, now),
            now,
            actions: Vec::new(),
        }
    }

    /// Sends raw bytes, returns the packets sent back to that peer.
    fn raw(&mut self, from: u16, bytes: &[u8]) -> Vec<Packet> {
        self.gw.handle_datagram(self.now, peer(from), bytes);
        self.drain(from)
    }

    fn drain(&mut self, to: u16) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(a) = self.gw.poll_action() {
            match a {
                Action::Send { to: p, bytes } => {
                    assert_eq!(p, peer(to), "reply to the wrong peer");
                    got.push(decode(&bytes).unwrap().packet);
                }
                other => self.actions.push(other),
            }
        }
        got
    }

    fn send(&mut self, from: u16, p: Packet) -> Vec<Packet> {
        let b = codec::encode_to_vec(&p).unwrap();
        self.raw(from, &b)
    }

    fn connect(&mut self, from: u16, id: &str, clean: bool, keep_alive: u16) {
        let r = self.send(
            from,
            Packet::Connect {
                flags: Flags {
                    clean_session: clean,
                    ..Flags::default()
                },
                protocol_id: 1,
                duration: keep_alive,
                client_id: id.into(),
            },
        );
        assert_eq!(
            r,
            [Packet::ConnAck {
                rc: ReturnCode::Accepted
            }]
        );
    }

    fn register(&mut self, from: u16, topic: &str) -> u16 {
        let r = self.send(
            from,
            Packet::Register {
                topic_id: 0,
                msg_id: 1,
                topic: topic.into(),
            },
        );
        match r.as_slice() {
            [
                Packet::RegAck {
                    topic_id,
                    rc: ReturnCode::Accepted,
                    ..
                },
            ] => *topic_id,
            other => panic!("{other:?}"),
        }
    }

    fn publish(
        &mut self,
        from: u16,
        qos: Qos,
        topic_id: u16,
        msg_id: u16,
        dup: bool,
    ) -> Vec<Packet> {
        self.send(
            from,
            Packet::Publish {
                flags: Flags {
                    qos,
                    dup,
                    ..Flags::default()
                },
                topic_id,
                msg_id,
                data: b"hi".to_vec(),
            },
        )
    }

    fn subscribe(&mut self, from: u16, filter: &str, qos: Qos) -> Vec<Packet> {
        self.send(
            from,
            Packet::Subscribe {
                dup: false,
                qos,
                msg_id: 9,
                topic: TopicRef::Name(filter.into()),
            },
        )
    }

    fn tick(&mut self, secs: u64, to: u16) -> Vec<Packet> {
        self.now += Duration::from_secs(secs);
        self.gw.handle_tick(self.now);
        self.drain(to)
    }

    fn publishes(&mut self) -> Vec<(Option<u64>, String, u8, bool)> {
        let v = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish {
                    ticket,
                    topic,
                    qos,
                    retain,
                    ..
                } => Some((*ticket, topic.clone(), *qos, *retain)),
                _ => None,
            })
            .collect();
        self.actions
            .retain(|a| !matches!(a, Action::Publish { .. }));
        v
    }

    fn deliver(&mut self, topic: &str, qos: u8, to: u16) -> Vec<Packet> {
        self.gw
            .deliver(self.now, topic, Bytes::from_static(b"down"), qos, false);
        self.drain(to)
    }
}

#[test]
fn connect_ping_disconnect() {
    let mut t = T::new(|_| {});
    t.connect(1, "a", true, 60);
    assert_eq!(
        t.send(1, Packet::PingReq { client_id: None }),
        [Packet::PingResp]
    );
    assert_eq!(
        t.send(1, Packet::Disconnect { duration: None }),
        [Packet::Disconnect { duration: None }]
    );
    assert_eq!(t.gw.session_count(), 0);
    // after that, requests get a DISCONNECT so the client reconnects
    assert_eq!(
        t.send(1, Packet::PingReq { client_id: None }),
        [Packet::Disconnect { duration: None }]
    );
}

#[test]
fn bad_connects_are_refused() {
    let mut t = T::new(|_| {});
    for (proto, id) in [(2u8, "a"), (1, ""), (1, "a-very-long-client-id-of-30-ch")] {
        let r = t.send(
            1,
            Packet::Connect {
                flags: Flags::default(),
                protocol_id: proto,
                duration: 10,
                client_id: id.into(),
            },
        );
        assert_eq!(
            r,
            [Packet::ConnAck {
                rc: ReturnCode::NotSupported
            }]
        );
    }
    assert_eq!(t.gw.session_count(), 0);
}

fn connect_with_will(t: &mut T, from: u16, keep_alive: u16) {
    let r = t.send(
        from,
        Packet::Connect {
            flags: Flags {
                will: true,
                clean_session: true,
                ..Flags::default()
            },
            protocol_id: 1,
            duration: keep_alive,
            client_id: "w".into(),
        },
    );
    assert_eq!(r, [Packet::WillTopicReq]);
    let r = t.send(
        from,
        Packet::WillTopic {
            will: Some(WillTopic {
                qos: Qos::One,
                retain: true,
                topic: "dev/w/status".into(),
            }),
        },
    );
    assert_eq!(r, [Packet::WillMsgReq]);
    let r = t.send(
        from,
        Packet::WillMsg {
            msg: b"gone".to_vec(),
        },
    );
    assert_eq!(
        r,
        [Packet::ConnAck {
            rc: ReturnCode::Accepted
        }]
    );
}

#[test]
fn will_published_on_keep_alive_expiry() {
    let mut t = T::new(|c| c.topic_prefix = "sn".into());
    connect_with_will(&mut t, 1, 10);
    t.tick(14, 1);
    assert!(t.publishes().is_empty(), "1.4 x keep-alive is not expiry");
    t.tick(2, 1);
    assert_eq!(
        t.publishes(),
        [(None, "sn/dev/w/status".to_string(), 1, true)]
    );
    assert_eq!(t.gw.session_count(), 0);
}

#[test]
fn will_not_published_on_clean_disconnect_and_updates_work() {
    let mut t = T::new(|_| {});
    connect_with_will(&mut t, 1, 10);
    let r = t.send(
        1,
        Packet::WillMsgUpd {
            msg: b"bye".to_vec(),
        },
    );
    assert_eq!(
        r,
        [Packet::WillMsgResp {
            rc: ReturnCode::Accepted
        }]
    );
    let r = t.send(
        1,
        Packet::WillTopicUpd {
            will: Some(WillTopic {
                qos: Qos::Zero,
                retain: false,
                topic: "x/y".into(),
            }),
        },
    );
    assert_eq!(
        r,
        [Packet::WillTopicResp {
            rc: ReturnCode::Accepted
        }]
    );
    t.tick(16, 1);
    let p = t.publishes();
    assert_eq!(p, [(None, "x/y".to_string(), 0, false)]);

    connect_with_will(&mut t, 1, 10);
    t.send(1, Packet::WillTopicUpd { will: None });
    let r = t.send(1, Packet::WillMsgUpd { msg: b"x".to_vec() });
    assert_eq!(
        r,
        [Packet::WillMsgResp {
            rc: ReturnCode::NotSupported
        }]
    );
    t.send(1, Packet::Disconnect { duration: None });
    t.tick(100, 1);
    assert!(t.publishes().is_empty());
}

#[test]
fn empty_will_topic_connects_without_will() {
    let mut t = T::new(|_| {});
    let r = t.send(
        1,
        Packet::Connect {
            flags: Flags {
                will: true,
                ..Flags::default()
            },
            protocol_id: 1,
            duration: 10,
            client_id: "e".into(),
        },
    );
    assert_eq!(r, [Packet::WillTopicReq]);
    assert_eq!(
        t.send(1, Packet::WillTopic { will: None }),
        [Packet::ConnAck {
            rc: ReturnCode::Accepted
        }]
    );
    t.tick(20, 1);
    assert!(t.publishes().is_empty());
}

#[test]
fn half_open_handshake_times_out() {
    let mut t = T::new(|_| {});
    let r = t.send(
        1,
        Packet::Connect {
            flags: Flags {
                will: true,
                ..Flags::default()
            },
            protocol_id: 1,
            duration: 1000,
            client_id: "h".into(),
        },
    );
    assert_eq!(r, [Packet::WillTopicReq]);
    assert_eq!(t.gw.session_count(), 1);
    t.tick(11, 1);
    assert_eq!(t.gw.session_count(), 0);
}

#[test]
fn qos0_publish_with_prefix() {
    let mut t = T::new(|c| c.topic_prefix = "plant/sn".into());
    t.connect(1, "a", true, 60);
    let id = t.register(1, "room/temp");
    assert!(t.publish(1, Qos::Zero, id, 0, false).is_empty());
    assert_eq!(
        t.publishes(),
        [(None, "plant/sn/room/temp".to_string(), 0, false)]
    );
    // unknown id
    assert_eq!(
        t.publish(1, Qos::Zero, 999, 0, false),
        [Packet::PubAck {
            topic_id: 999,
            msg_id: 0,
            rc: ReturnCode::InvalidTopicId
        }]
    );
}

#[test]
fn qos1_acked_only_when_outbox_holds_it() {
    let mut t = T::new(|_| {});
    t.connect(1, "a", true, 60);
    let id = t.register(1, "t");
    assert!(t.publish(1, Qos::One, id, 5, false).is_empty());
    let p = t.publishes();
    let ticket = p[0].0.unwrap();
    // duplicate while pending: no second publish, no answer yet
    assert!(t.publish(1, Qos::One, id, 5, true).is_empty());
    assert!(t.publishes().is_empty());
    t.gw.uplink_result(ticket, Ok(()));
    assert_eq!(
        t.drain(1),
        [Packet::PubAck {
            topic_id: id,
            msg_id: 5,
            rc: ReturnCode::Accepted
        }]
    );
    // DUP after the ack (our PUBACK was lost): acked again, not published again
    assert_eq!(t.publish(1, Qos::One, id, 5, true).len(), 1);
    assert!(t.publishes().is_empty());
    // congestion from the outbox
    t.publish(1, Qos::One, id, 6, false);
    let ticket = t.publishes()[0].0.unwrap();
    t.gw.uplink_result(ticket, Err(Rejected::Congestion));
    assert_eq!(
        t.drain(1),
        [Packet::PubAck {
            topic_id: id,
            msg_id: 6,
            rc: ReturnCode::Congestion
        }]
    );
    // unknown tickets are ignored
    t.gw.uplink_result(12345, Ok(()));
    assert!(t.drain(1).is_empty());
}

#[test]
fn qos1_inflight_limit_gives_congestion() {
    let mut t = T::new(|c| c.limits.max_inflight = 2);
    t.connect(1, "a", true, 60);
    let id = t.register(1, "t");
    assert!(t.publish(1, Qos::One, id, 1, false).is_empty());
    assert!(t.publish(1, Qos::One, id, 2, false).is_empty());
    assert_eq!(
        t.publish(1, Qos::One, id, 3, false),
        [Packet::PubAck {
            topic_id: id,
            msg_id: 3,
            rc: ReturnCode::Congestion
        }]
    );
    assert_eq!(t.publishes().len(), 2);
}

#[test]
fn qos2_exactly_once() {
    let mut t = T::new(|_| {});
    t.connect(1, "a", true, 60);
    let id = t.register(1, "t");
    t.publish(1, Qos::Two, id, 7, false);
    let p = t.publishes();
    assert_eq!(p[0].2, 2);
    t.gw.uplink_result(p[0].0.unwrap(), Ok(()));
    assert_eq!(t.drain(1), [Packet::PubRec { msg_id: 7 }]);
    // PUBREC lost, client resends with DUP: PUBREC again, nothing published
    assert_eq!(
        t.publish(1, Qos::Two, id, 7, true),
        [Packet::PubRec { msg_id: 7 }]
    );
    assert!(t.publishes().is_empty());
    assert_eq!(
        t.send(1, Packet::PubRel { msg_id: 7 }),
        [Packet::PubComp { msg_id: 7 }]
    );
    // after PUBREL the id is free again: a new message with it is published
    t.publish(1, Qos::Two, id, 7, false);
    assert_eq!(t.publishes().len(), 1);
}

#[test]
fn qos_minus_one() {
    let mut t = T::new(|c| {
        c.predefined_topics.insert(5, "pre/five".into());
    });
    let pub_m1 = |tt, topic_id| Packet::Publish {
        flags: Flags {
            qos: Qos::MinusOne,
            topic_id_type: tt,
            ..Flags::default()
        },
        topic_id,
        msg_id: 0,
        data: b"x".to_vec(),
    };
    assert!(t.send(3, pub_m1(TopicIdType::Predefined, 5)).is_empty());
    assert!(
        t.send(3, pub_m1(TopicIdType::Short, u16::from_be_bytes(*b"ab")))
            .is_empty()
    );
    assert!(t.send(3, pub_m1(TopicIdType::Normal, 1)).is_empty());
    assert!(t.send(3, pub_m1(TopicIdType::Predefined, 6)).is_empty());
    let p: Vec<String> = t.publishes().into_iter().map(|p| p.1).collect();
    assert_eq!(p, ["pre/five", "ab"]);
    assert_eq!(t.gw.session_count(), 0);

    let mut t = T::new(|c| {
        c.qos_minus_one = false;
        c.predefined_topics.insert(5, "pre/five".into());
    });
    t.send(3, pub_m1(TopicIdType::Predefined, 5));
    assert!(t.publishes().is_empty());
}

#[test]
fn subscriptions_are_reference_counted_upstream() {
    let mut t = T::new(|c| c.topic_prefix = "sn".into());
    t.connect(1, "a", true, 60);
    t.connect(2, "b", true, 60);
    let r = t.subscribe(1, "room/+", Qos::One);
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            topic_id: 0,
            rc: ReturnCode::Accepted,
            qos: Qos::One,
            ..
        }]
    ));
    t.drain(2);
    t.subscribe(2, "room/+", Qos::Two);
    t.drain(2);
    let subs: Vec<_> = t
        .actions
        .drain(..)
        .filter(|a| matches!(a, Action::Subscribe { .. } | Action::Unsubscribe { .. }))
        .collect();
    assert_eq!(
        subs,
        [
            Action::Subscribe {
                filter: "sn/room/+".into(),
                qos: 1
            },
            Action::Subscribe {
                filter: "sn/room/+".into(),
                qos: 2
            },
        ]
    );
    assert_eq!(
        t.gw.upstream_subscriptions(),
        [("sn/room/+".to_string(), 2, 2)]
    );
    let r = t.send(
        1,
        Packet::Unsubscribe {
            msg_id: 3,
            topic: TopicRef::Name("room/+".into()),
        },
    );
    assert_eq!(r, [Packet::UnsubAck { msg_id: 3 }]);
    assert!(t.actions.is_empty());
    // the last subscriber vanishes (keep-alive): upstream unsubscribe
    t.send(1, Packet::Disconnect { duration: None });
    t.tick(100, 2);
    assert_eq!(
        t.actions,
        [Action::Unsubscribe {
            filter: "sn/room/+".into()
        }]
    );
    assert!(t.gw.upstream_subscriptions().is_empty());
}

#[test]
fn delivery_registers_then_publishes_at_granted_qos() {
    let mut t = T::new(|c| c.topic_prefix = "sn".into());
    t.connect(1, "a", true, 60);
    t.subscribe(1, "room/#", Qos::One);
    // other prefixes are not ours
    assert!(t.deliver("other/room/x", 1, 1).is_empty());
    let r = t.deliver("sn/room/kitchen", 2, 1);
    let (tid, mid) = match r.as_slice() {
        [
            Packet::Register {
                topic_id,
                msg_id,
                topic,
            },
        ] if topic == "room/kitchen" => (*topic_id, *msg_id),
        other => panic!("{other:?}"),
    };
    // a second message waits behind the first
    assert!(t.deliver("sn/room/kitchen", 0, 1).is_empty());
    let r = t.send(
        1,
        Packet::RegAck {
            topic_id: tid,
            msg_id: mid,
            rc: ReturnCode::Accepted,
        },
    );
    let mid = match r.as_slice() {
        [
            Packet::Publish {
                flags,
                topic_id,
                msg_id,
                data,
            },
        ] => {
            assert_eq!(
                (flags.qos, *topic_id, data.as_slice()),
                (Qos::One, tid, &b"down"[..])
            );
            *msg_id
        }
        other => panic!("{other:?}"),
    };
    let r = t.send(
        1,
        Packet::PubAck {
            topic_id: tid,
            msg_id: mid,
            rc: ReturnCode::Accepted,
        },
    );
    assert!(matches!(r.as_slice(), [Packet::Publish { flags, .. }] if flags.qos == Qos::Zero));
}

#[test]
fn qos2_delivery_and_retransmission_then_loss() {
    let mut t = T::new(|c| {
        c.retry_interval = Duration::from_secs(5);
        c.retry_count = 2;
    });
    t.connect(1, "a", true, 600);
    let r = t.subscribe(1, "q/x", Qos::Two);
    let tid = match r.as_slice() {
        [Packet::SubAck { topic_id, .. }] => *topic_id,
        other => panic!("{other:?}"),
    };
    assert_ne!(tid, 0, "a plain name gets its topic id in SUBACK");
    let r = t.deliver("q/x", 2, 1);
    let mid = match r.as_slice() {
        [
            Packet::Publish {
                msg_id,
                topic_id,
                flags,
                ..
            },
        ] if *topic_id == tid && flags.qos == Qos::Two => *msg_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        t.send(1, Packet::PubRec { msg_id: mid }),
        [Packet::PubRel { msg_id: mid }]
    );
    assert!(t.send(1, Packet::PubComp { msg_id: mid }).is_empty());
    // next one is never answered: resent with DUP, then the client is lost
    t.deliver("q/x", 1, 1);
    let r = t.tick(5, 1);
    assert!(matches!(r.as_slice(), [Packet::Publish { flags, .. }] if flags.dup));
    t.tick(5, 1);
    assert_eq!(t.gw.session_count(), 1);
    t.tick(5, 1);
    assert_eq!(t.gw.session_count(), 0);
}

#[test]
fn sleeping_client_gets_held_messages_on_wake() {
    let mut t = T::new(|c| c.limits.max_held = 3);
    t.connect(1, "s", true, 30);
    t.subscribe(1, "cmd/#", Qos::Zero);
    assert_eq!(
        t.send(
            1,
            Packet::Disconnect {
                duration: Some(100)
            }
        ),
        [Packet::Disconnect { duration: None }]
    );
    for _ in 0..5 {
        assert!(t.deliver("cmd/go", 0, 1).is_empty());
    }
    assert_eq!(t.gw.client("s").unwrap().held, 3);
    // keep-alive (30 s) does not apply while asleep
    t.tick(60, 1);
    assert_eq!(t.gw.session_count(), 1);
    // a PINGREQ from another address does not wake it (spoofing)
    assert!(
        t.send(
            2,
            Packet::PingReq {
                client_id: Some("s".into())
            }
        ) == [Packet::Disconnect { duration: None }]
    );
    let r = t.send(
        1,
        Packet::PingReq {
            client_id: Some("s".into()),
        },
    );
    assert!(matches!(r[0], Packet::Register { .. }), "{r:?}");
    let (tid, mid) = match &r[0] {
        Packet::Register {
            topic_id, msg_id, ..
        } => (*topic_id, *msg_id),
        _ => unreachable!(),
    };
    let r = t.send(
        1,
        Packet::RegAck {
            topic_id: tid,
            msg_id: mid,
            rc: ReturnCode::Accepted,
        },
    );
    assert_eq!(r.len(), 4, "three held messages, then PINGRESP: {r:?}");
    assert_eq!(r[3], Packet::PingResp);
    assert!(matches!(
        t.gw.client("s").unwrap().state,
        State::Asleep { .. }
    ));
    // not heard of for 1.5 x the sleep duration: lost
    t.tick(151, 1);
    assert_eq!(t.gw.session_count(), 0);
}

#[test]
fn persistent_session_keeps_subscriptions_and_messages() {
    let mut t = T::new(|_| {});
    t.connect(1, "p", false, 30);
    t.subscribe(1, "a/b", Qos::One);
    t.send(1, Packet::Disconnect { duration: None });
    assert_eq!(t.gw.client("p").unwrap().state, State::Disconnected);
    t.deliver("a/b", 1, 1);
    // reconnects from a new port: takes the session over, gets the message
    t.connect(7, "p", false, 30);
    let r = t.drain(7);
    assert!(r.is_empty());
    let r = t.send(7, Packet::PingReq { client_id: None });
    assert_eq!(r, [Packet::PingResp]);
    assert_eq!(t.gw.session_count(), 1);
    t.deliver("a/b", 1, 7);
    assert_eq!(t.gw.clients()[0].addr, addr(7));
}

#[test]
fn held_message_delivered_after_reconnect() {
    let mut t = T::new(|_| {});
    t.connect(1, "p", false, 30);
    let r = t.subscribe(1, "a/b", Qos::One);
    let tid = match r.as_slice() {
        [Packet::SubAck { topic_id, .. }] => *topic_id,
        other => panic!("{other:?}"),
    };
    t.send(1, Packet::Disconnect { duration: None });
    t.deliver("a/b", 1, 1);
    let r = t.send(
        1,
        Packet::Connect {
            flags: Flags::default(),
            protocol_id: 1,
            duration: 30,
            client_id: "p".into(),
        },
    );
    assert_eq!(
        r[0],
        Packet::ConnAck {
            rc: ReturnCode::Accepted
        }
    );
    assert!(
        matches!(&r[1], Packet::Publish { topic_id, .. } if *topic_id == tid),
        "{r:?}"
    );
}

#[test]
fn forwarder_encapsulation() {
    let mut t = T::new(|_| {});
    let connect = |node: u8, id: &str| {
        let d = Datagram {
            encap: Some(Encapsulation {
                ctrl: 1,
                node_id: vec![node],
            }),
            packet: Packet::Connect {
                flags: Flags::default(),
                protocol_id: 1,
                duration: 30,
                client_id: id.into(),
            },
        };
        let mut b = Vec::new();
        codec::encode(&d, &mut b).unwrap();
        b
    };
    t.gw.handle_datagram(t.now, peer(1), &connect(0xA1, "n1"));
    t.gw.handle_datagram(t.now, peer(1), &connect(0xA2, "n2"));
    let mut replies = Vec::new();
    while let Some(Action::Send { bytes, .. }) = t.gw.poll_action() {
        replies.push(decode(&bytes).unwrap());
    }
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].encap.as_ref().unwrap().node_id, [0xA1]);
    assert_eq!(replies[1].encap.as_ref().unwrap().node_id, [0xA2]);
    assert_eq!(
        replies[1].packet,
        Packet::ConnAck {
            rc: ReturnCode::Accepted
        }
    );
    assert_eq!(t.gw.session_count(), 2);
}

#[test]
fn searchgw_answered_and_rate_limited() {
    let mut t = T::new(|c| {
        c.gateway_id = 9;
        c.limits.gwinfo_per_second = 2.0;
    });
    let mut answers = 0;
    for i in 0..50 {
        let r = t.send(100 + i, Packet::SearchGw { radius: 1 });
        if let [Packet::GwInfo { gw_id, .. }] = r.as_slice() {
            assert_eq!(*gw_id, 9);
            answers += 1;
        }
    }
    assert_eq!(answers, 2);
}

#[test]
fn advertise_on_tick() {
    let mut t = T::new(|c| {
        c.advertise = Some(crate::mqttsn::config::AdvertiseConfig {
            interval: Duration::from_secs(60),
            address: "255.255.255.255:1884".parse().unwrap(),
        })
    });
    t.tick(0, 1);
    t.tick(30, 1);
    t.tick(31, 1);
    let n = t
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast { bytes } if decode(bytes).unwrap().packet == Packet::Advertise { gw_id: 1, duration: 60 }))
        .count();
    assert_eq!(n, 2);
}

#[test]
fn allow_list_and_ten_thousand_fake_clients() {
    let mut t = T::new(|c| {
        c.allow_clients = Some(vec!["good".into()]);
        c.limits.max_sources = 256;
    });
    for i in 0..10_000u32 {
        let p = Packet::Connect {
            flags: Flags::default(),
            protocol_id: 1,
            duration: 60,
            client_id: format!("fake-{i}"),
        };
        let b = codec::encode_to_vec(&p).unwrap();
        let from = Peer::Udp(std::net::SocketAddr::from((
            [10, 1, (i >> 8) as u8, i as u8],
            5000,
        )));
        t.gw.handle_datagram(t.now, from, &b);
        while let Some(a) = t.gw.poll_action() {
            if let Action::Send { bytes, .. } = a {
                assert!(bytes.len() <= b.len(), "amplification");
            }
        }
    }
    assert_eq!(t.gw.session_count(), 0);
    assert!(t.gw.rate.len() <= 256);
    t.connect(1, "good", true, 60);
}

#[test]
fn fake_flood_without_allow_list_cannot_lock_out_a_real_client() {
    let mut t = T::new(|c| c.limits.max_clients = 100);
    t.connect(1, "real-1", true, 60);
    t.send(1, Packet::PingReq { client_id: None }); // verified
    for i in 0..10_000u32 {
        let p = Packet::Connect {
            flags: Flags::default(),
            protocol_id: 1,
            duration: 60,
            client_id: format!("fake-{i}"),
        };
        let b = codec::encode_to_vec(&p).unwrap();
        let from = Peer::Udp(std::net::SocketAddr::from((
            [10, 2, (i >> 8) as u8, i as u8],
            5000,
        )));
        t.gw.handle_datagram(t.now, from, &b);
        while t.gw.poll_action().is_some() {}
    }
    assert!(t.gw.session_count() <= 100);
    assert!(
        t.gw.client("real-1").is_some(),
        "a verified client is never evicted"
    );
    t.connect(2, "real-2", true, 60);
}

#[test]
fn per_source_rate_limit() {
    let mut t = T::new(|c| {
        c.limits.rate_per_source = 1.0;
        c.limits.rate_burst = 5.0;
    });
    t.connect(1, "a", true, 60);
    let mut answered = 0;
    for _ in 0..20 {
        answered += t.send(1, Packet::PingReq { client_id: None }).len();
    }
    assert_eq!(answered, 4, "burst of 5 minus the CONNECT");
    // another source is not affected
    t.connect(2, "b", true, 60);
}

#[test]
fn malformed_and_oversized_datagrams_are_dropped() {
    let mut t = T::new(|c| c.limits.max_packet_size = 64);
    t.connect(1, "a", true, 60);
    for b in [
        &[][..],
        &[0],
        &[9, 0x16],
        &[2, 0x33],
        &[3, 0xFE, 0],
        &[1, 0, 0],
        &[5, 0x0C, 0, 0, 1],
    ] {
        assert!(t.raw(1, b).is_empty());
    }
    assert!(t.raw(1, &[100u8; 100]).is_empty());
    assert_eq!(t.gw.session_count(), 1);
}

#[test]
fn per_client_topic_prefixes() {
    let mut t = T::new(|c| {
        c.client_topics
            .insert("*".into(), vec!["nodes/{client}/".into()]);
    });
    t.connect(1, "n1", true, 60);
    let r = t.send(
        1,
        Packet::Register {
            topic_id: 0,
            msg_id: 1,
            topic: "nodes/n2/t".into(),
        },
    );
    assert!(matches!(
        r.as_slice(),
        [Packet::RegAck {
            rc: ReturnCode::NotSupported,
            ..
        }]
    ));
    t.register(1, "nodes/n1/t");
    let r = t.subscribe(1, "nodes/#", Qos::Zero);
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            rc: ReturnCode::NotSupported,
            ..
        }]
    ));
    let r = t.subscribe(1, "nodes/n1/#", Qos::Zero);
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            rc: ReturnCode::Accepted,
            ..
        }]
    ));
    // short topics are outside every prefix
    let r = t.publish(1, Qos::Zero, u16::from_be_bytes(*b"ab"), 0, false);
    let _ = r;
}

#[test]
fn topic_and_subscription_limits() {
    let mut t = T::new(|c| {
        c.limits.max_topics_per_client = 2;
        c.limits.max_subscriptions_per_client = 1;
    });
    t.connect(1, "a", true, 60);
    t.register(1, "t1");
    t.register(1, "t2");
    let r = t.send(
        1,
        Packet::Register {
            topic_id: 0,
            msg_id: 1,
            topic: "t3".into(),
        },
    );
    assert!(matches!(
        r.as_slice(),
        [Packet::RegAck {
            rc: ReturnCode::Congestion,
            ..
        }]
    ));
    assert!(matches!(
        t.subscribe(1, "x/#", Qos::Zero).as_slice(),
        [Packet::SubAck {
            rc: ReturnCode::Accepted,
            ..
        }]
    ));
    assert!(matches!(
        t.subscribe(1, "y/#", Qos::Zero).as_slice(),
        [Packet::SubAck {
            rc: ReturnCode::Congestion,
            ..
        }]
    ));
}

#[test]
fn predefined_and_short_subscriptions() {
    let mut t = T::new(|c| {
        c.predefined_topics.insert(7, "pre/seven".into());
    });
    t.connect(1, "a", true, 60);
    let r = t.send(
        1,
        Packet::Subscribe {
            dup: false,
            qos: Qos::Zero,
            msg_id: 1,
            topic: TopicRef::Predefined(7),
        },
    );
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            topic_id: 7,
            rc: ReturnCode::Accepted,
            ..
        }]
    ));
    let r = t.send(
        1,
        Packet::Subscribe {
            dup: false,
            qos: Qos::Zero,
            msg_id: 2,
            topic: TopicRef::Short(*b"zz"),
        },
    );
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            topic_id: 0,
            rc: ReturnCode::Accepted,
            ..
        }]
    ));
    let r = t.send(
        1,
        Packet::Subscribe {
            dup: false,
            qos: Qos::Zero,
            msg_id: 3,
            topic: TopicRef::Predefined(8),
        },
    );
    assert!(matches!(
        r.as_slice(),
        [Packet::SubAck {
            rc: ReturnCode::InvalidTopicId,
            ..
        }]
    ));
    let r = t.deliver("pre/seven", 0, 1);
    assert!(
        matches!(r.as_slice(), [Packet::Publish { flags, topic_id: 7, .. }] if flags.topic_id_type == TopicIdType::Predefined),
        "{r:?}"
    );
    let r = t.deliver("zz", 0, 1);
    assert!(
        matches!(r.as_slice(), [Packet::Publish { flags, topic_id, .. }] if flags.topic_id_type == TopicIdType::Short && *topic_id == u16::from_be_bytes(*b"zz")),
        "{r:?}"
    );
}

#[test]
#[cfg(feature = "prometheus")]
fn sent_packets_and_congestion_are_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let mut t = T::new(|c| c.limits.max_inflight = 1);
        t.connect(1, "a", true, 60);
        let id = t.register(1, "t");
        assert!(t.publish(1, Qos::One, id, 1, false).is_empty());
        assert_eq!(t.publish(1, Qos::One, id, 2, false).len(), 1);
    });
    let text = handle.render();
    let line = |l: &str| text.lines().any(|x| x == l);
    assert!(
        line("edgebus_mqttsn_packets_sent_total{type=\"connack\"} 1"),
        "{text}"
    );
    assert!(
        line("edgebus_mqttsn_packets_sent_total{type=\"puback\"} 1"),
        "{text}"
    );
    assert!(line("edgebus_mqttsn_congestion_total 1"), "{text}");
}
