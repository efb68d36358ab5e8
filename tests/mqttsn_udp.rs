//! The MQTT-SN gateway over real UDP sockets, with our own client for what off-the-shelf
//! clients lack (QoS -1, sleeping clients, forwarder encapsulation), and an in-memory outbox.

mod mqttsn_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use edgebus::message::QoS;
use edgebus::mqttsn::Delivery;
use edgebus::mqttsn::codec::{Flags, Packet, Qos, ReturnCode, TopicIdType, TopicRef};
use mqttsn_support::*;

#[tokio::test]
async fn publish_every_qos_through_the_outbox() {
    let h = start(|c| {
        c.topic_prefix = "sn".into();
        c.predefined_topics.insert(10, "pre/ten".into());
    })
    .await;
    // QoS -1: no connection at all
    let c = Client::new(h.addr).await;
    c.send(Packet::Publish {
        flags: Flags {
            qos: Qos::MinusOne,
            topic_id_type: TopicIdType::Predefined,
            ..Flags::default()
        },
        topic_id: 10,
        msg_id: 0,
        data: b"m1".to_vec(),
    })
    .await;
    eventually("QoS -1 in outbox", || h.uplink.topics().len() == 1).await;

    let mut c = Client::new(h.addr).await;
    c.connect("node-1", 30).await;
    let id = c.register("room/temp").await;
    let p = c.publish_packet(Qos::Zero, id, b"q0");
    c.send(p).await;
    let p = c.publish_packet(Qos::One, id, b"q1");
    match c.request(p).await {
        Packet::PubAck {
            rc: ReturnCode::Accepted,
            topic_id,
            ..
        } => assert_eq!(topic_id, id),
        other => panic!("{other:?}"),
    }
    let p = c.publish_packet(Qos::Two, id, b"q2");
    let Packet::PubRec { msg_id } = c.request(p).await else {
        panic!()
    };
    assert_eq!(
        c.request(Packet::PubRel { msg_id }).await,
        Packet::PubComp { msg_id }
    );
    let got = h.uplink.topics();
    assert_eq!(
        got,
        [
            ("sn/pre/ten".to_string(), b"m1".to_vec(), 0, false),
            ("sn/room/temp".to_string(), b"q0".to_vec(), 0, false),
            ("sn/room/temp".to_string(), b"q1".to_vec(), 1, false),
            ("sn/room/temp".to_string(), b"q2".to_vec(), 2, false),
        ]
    );
    // outbox full: the client hears "congestion"
    h.uplink.congested.store(true, Ordering::SeqCst);
    let p = c.publish_packet(Qos::One, id, b"lost?");
    assert!(matches!(
        c.request(p).await,
        Packet::PubAck {
            rc: ReturnCode::Congestion,
            ..
        }
    ));
}

#[tokio::test]
async fn subscribe_and_receive_with_wildcards() {
    let h = start(|c| c.topic_prefix = "sn".into()).await;
    let c = Client::new(h.addr).await;
    c.connect("sub-1", 30).await;
    let r = c
        .request(Packet::Subscribe {
            dup: false,
            qos: Qos::One,
            msg_id: 1,
            topic: TopicRef::Name("cmd/+/set".into()),
        })
        .await;
    assert!(matches!(
        r,
        Packet::SubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    eventually("upstream subscribe", || {
        h.downlink.log.lock().unwrap().as_slice() == ["sub sn/cmd/+/set 1"]
    })
    .await;
    h.deliver
        .send(Delivery {
            topic: "sn/cmd/valve/set".into(),
            payload: Bytes::from_static(b"open"),
            qos: QoS::ExactlyOnce,
            retain: false,
        })
        .await
        .unwrap();
    let Packet::Register {
        topic_id,
        msg_id,
        topic,
    } = c.recv().await
    else {
        panic!()
    };
    assert_eq!(topic, "cmd/valve/set");
    c.send(Packet::RegAck {
        topic_id,
        msg_id,
        rc: ReturnCode::Accepted,
    })
    .await;
    match c.recv().await {
        Packet::Publish {
            flags,
            topic_id: t,
            msg_id,
            data,
        } => {
            assert_eq!(
                (flags.qos, t, data.as_slice()),
                (Qos::One, topic_id, &b"open"[..])
            );
            c.send(Packet::PubAck {
                topic_id,
                msg_id,
                rc: ReturnCode::Accepted,
            })
            .await;
        }
        other => panic!("{other:?}"),
    }
    c.request(Packet::Disconnect { duration: None }).await;
    eventually("upstream unsubscribe", || {
        h.downlink.log.lock().unwrap().last().map(String::as_str) == Some("unsub sn/cmd/+/set")
    })
    .await;
}

#[tokio::test]
async fn sleeping_client_gets_messages_when_it_wakes() {
    let h = start(|_| {}).await;
    let c = Client::new(h.addr).await;
    c.connect("sleepy", 10).await;
    let r = c
        .request(Packet::Subscribe {
            dup: false,
            qos: Qos::Zero,
            msg_id: 1,
            topic: TopicRef::Short(*b"ab"),
        })
        .await;
    assert!(matches!(
        r,
        Packet::SubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    assert_eq!(
        c.request(Packet::Disconnect { duration: Some(60) }).await,
        Packet::Disconnect { duration: None }
    );
    for i in 0..3u8 {
        h.deliver
            .send(Delivery {
                topic: "ab".into(),
                payload: Bytes::from(vec![i]),
                qos: QoS::AtMostOnce,
                retain: false,
            })
            .await
            .unwrap();
    }
    assert!(
        c.try_recv(Duration::from_millis(300)).await.is_none(),
        "held while asleep"
    );
    c.send(Packet::PingReq {
        client_id: Some("sleepy".into()),
    })
    .await;
    for i in 0..3u8 {
        match c.recv().await {
            Packet::Publish { data, flags, .. } => {
                assert_eq!(data, [i]);
                assert_eq!(flags.topic_id_type, TopicIdType::Short);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.recv().await, Packet::PingResp);
}

#[tokio::test]
async fn forwarder_encapsulated_nodes() {
    let h = start(|_| {}).await;
    let mut a = Client::new(h.addr).await;
    a.node = Some(vec![0x00, 0x13, 0xA2, 0x01]);
    a.connect("zigbee-1", 30).await;
    let id = a.register("radio/a").await;
    let p = a.publish_packet(Qos::One, id, b"x");
    assert!(matches!(
        a.request(p).await,
        Packet::PubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    // the same forwarder socket, another node: another session
    let b = Client {
        sock: a.sock,
        gw: h.addr,
        node: Some(vec![0x02]),
        msg_id: 0,
    };
    b.connect("zigbee-2", 30).await;
    assert_eq!(h.uplink.topics()[0].0, "radio/a");
}

#[tokio::test]
async fn ipv6_socket() {
    let cfg_addr = "[::1]:0".parse().unwrap();
    let Ok(sock) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    };
    drop(sock);
    let h = start(|c| c.bind = vec![cfg_addr]).await;
    assert!(h.addr.is_ipv6());
    let c = Client::new(h.addr).await;
    c.connect("v6", 30).await;
    assert_eq!(
        c.request(Packet::PingReq { client_id: None }).await,
        Packet::PingResp
    );
}

#[tokio::test]
async fn hostile_datagrams_do_not_disturb_a_client() {
    let h = start(|c| c.limits.max_packet_size = 128).await;
    let mut good = Client::new(h.addr).await;
    good.connect("good", 30).await;
    let id = good.register("t").await;
    let bad = Client::new(h.addr).await;
    for b in [
        vec![],
        vec![0],
        vec![200, 0x0C, 0, 0, 1],
        vec![2, 0x99],
        vec![3, 0xFE, 0, 3, 0xFE],
        vec![7u8; 4000],
        vec![1, 0xFF, 0xFF, 0x0C],
    ] {
        bad.sock.send_to(&b, h.addr).await.unwrap();
    }
    assert!(bad.try_recv(Duration::from_millis(200)).await.is_none());
    let p = good.publish_packet(Qos::One, id, b"ok");
    assert!(matches!(
        good.request(p).await,
        Packet::PubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
}

#[tokio::test]
async fn keep_alive_expiry_publishes_the_will() {
    let h = start(|_| {}).await;
    let c = Client::new(h.addr).await;
    c.send(Packet::Connect {
        flags: Flags {
            will: true,
            clean_session: true,
            ..Flags::default()
        },
        protocol_id: 1,
        duration: 1,
        client_id: "mortal".into(),
    })
    .await;
    assert_eq!(c.recv().await, Packet::WillTopicReq);
    c.send(Packet::WillTopic {
        will: Some(edgebus::mqttsn::codec::WillTopic {
            qos: Qos::One,
            retain: true,
            topic: "mortal/status".into(),
        }),
    })
    .await;
    assert_eq!(c.recv().await, Packet::WillMsgReq);
    assert_eq!(
        c.request(Packet::WillMsg {
            msg: b"offline".to_vec()
        })
        .await,
        Packet::ConnAck {
            rc: ReturnCode::Accepted
        }
    );
    // silence: after 1.5 s the will is published
    eventually("will published", || {
        h.uplink.topics() == [("mortal/status".to_string(), b"offline".to_vec(), 1, true)]
    })
    .await;
}

#[tokio::test]
async fn ten_thousand_fake_client_ids_do_not_lock_out_an_allowed_client() {
    let h = start(|c| c.allow_clients = Some(vec!["real".into()])).await;
    let attacker = Client::new(h.addr).await;
    let mut answers = 0usize;
    for i in 0..10_000 {
        let p = Packet::Connect {
            flags: Flags {
                clean_session: true,
                ..Flags::default()
            },
            protocol_id: 1,
            duration: 60,
            client_id: format!("fake-{i}"),
        };
        let b = edgebus::mqttsn::codec::encode_to_vec(&p).unwrap();
        attacker.sock.send_to(&b, h.addr).await.unwrap();
    }
    while let Some(p) = attacker.try_recv(Duration::from_millis(300)).await {
        assert_eq!(
            p,
            Packet::ConnAck {
                rc: ReturnCode::NotSupported
            }
        );
        answers += 1;
    }
    // the per-source rate limit answered only a burst of them
    assert!(answers <= 300, "{answers} answers to a flood");
    let real = Client::new(h.addr).await;
    real.connect("real", 30).await;
}

/// ADVERTISE goes out over UDP to the configured address, first at start and then every
/// interval (sent through the same batched path as every other datagram).
#[tokio::test]
async fn advertise_reaches_the_configured_address() {
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    let _h = start(|c| {
        c.advertise = Some(edgebus::mqttsn::config::AdvertiseConfig {
            interval: Duration::from_secs(1),
            address: to,
        });
    })
    .await;
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), listener.recv_from(&mut buf))
            .await
            .expect("an ADVERTISE within 5 s")
            .unwrap();
        let d = edgebus::mqttsn::codec::decode(&buf[..n]).unwrap();
        assert!(
            matches!(d.packet, Packet::Advertise { duration: 1, .. }),
            "{:?}",
            d.packet
        );
    }
}
