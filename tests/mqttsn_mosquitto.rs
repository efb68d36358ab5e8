//! End to end: MQTT-SN clients -> gateway -> mosquitto and back.

mod mqttsn_support;

use std::time::Duration;

use edgebus::mqttsn::codec::{Flags, Packet, Qos, ReturnCode, TopicIdType, TopicRef, WillTopic};
use mqttsn_support::*;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};

/// An MQTT observer on the broker: returns the client and a receiver of (topic, payload).
async fn observer(
    port: u16,
    filter: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::Receiver<(String, Vec<u8>, bool)>,
) {
    let mut o = MqttOptions::new(format!("obs-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = AsyncClient::new(o, 100);
    c.subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let (subbed_tx, subbed_rx) = tokio::sync::oneshot::channel();
    let mut subbed_tx = Some(subbed_tx);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(t) = subbed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if tx
                        .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    subbed_rx.await.unwrap();
    (c, rx)
}

async fn next(
    rx: &mut tokio::sync::mpsc::Receiver<(String, Vec<u8>, bool)>,
) -> (String, Vec<u8>, bool) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("nothing reached the broker")
        .unwrap()
}

#[tokio::test]
async fn publish_at_every_qos_reaches_mosquitto() {
    let Some(m) = mosquitto() else { return };
    let (_obs, mut rx) = observer(m.port, "sn/#").await;
    let (gw, _stop) = start_direct(m.port, |c| {
        c.topic_prefix = "sn".into();
        c.predefined_topics.insert(3, "pre/three".into());
    })
    .await;
    let c = Client::new(gw).await;
    c.send(Packet::Publish {
        flags: Flags {
            qos: Qos::MinusOne,
            topic_id_type: TopicIdType::Predefined,
            ..Flags::default()
        },
        topic_id: 3,
        msg_id: 0,
        data: b"minus-one".to_vec(),
    })
    .await;
    assert_eq!(
        next(&mut rx).await,
        ("sn/pre/three".into(), b"minus-one".to_vec(), false)
    );
    let mut c = Client::new(gw).await;
    c.connect("e2e-pub", 30).await;
    let id = c.register("e2e/t").await;
    let p = c.publish_packet(Qos::Zero, id, b"zero");
    c.send(p).await;
    assert_eq!(next(&mut rx).await.1, b"zero");
    let p = c.publish_packet(Qos::One, id, b"one");
    assert!(matches!(
        c.request(p).await,
        Packet::PubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    assert_eq!(next(&mut rx).await.1, b"one");
    let p = c.publish_packet(Qos::Two, id, b"two");
    let Packet::PubRec { msg_id } = c.request(p).await else {
        panic!()
    };
    assert_eq!(
        c.request(Packet::PubRel { msg_id }).await,
        Packet::PubComp { msg_id }
    );
    assert_eq!(
        next(&mut rx).await,
        ("sn/e2e/t".into(), b"two".to_vec(), false)
    );
}

#[tokio::test]
async fn wildcard_subscription_and_sleeping_client_get_broker_messages() {
    let Some(m) = mosquitto() else { return };
    let (obs, _rx) = observer(m.port, "nothing").await;
    let (gw, _stop) = start_direct(m.port, |c| c.topic_prefix = "sn".into()).await;
    let c = Client::new(gw).await;
    c.connect("e2e-sub", 30).await;
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
    // the upstream subscription is asynchronous: publish until the first one arrives
    let mut got = None;
    for _ in 0..50 {
        obs.publish("sn/cmd/heater/set", rumqttc::QoS::AtLeastOnce, false, "on")
            .await
            .unwrap();
        if let Some(p) = c.try_recv(Duration::from_millis(200)).await {
            got = Some(p);
            break;
        }
    }
    let Some(Packet::Register {
        topic_id,
        msg_id,
        topic,
    }) = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(topic, "cmd/heater/set");
    c.send(Packet::RegAck {
        topic_id,
        msg_id,
        rc: ReturnCode::Accepted,
    })
    .await;
    let Packet::Publish { data, msg_id, .. } = c.recv().await else {
        panic!()
    };
    assert_eq!(data, b"on");
    c.send(Packet::PubAck {
        topic_id,
        msg_id,
        rc: ReturnCode::Accepted,
    })
    .await;
    // drain duplicates of the probing loop
    while let Some(p) = c.try_recv(Duration::from_millis(300)).await {
        if let Packet::Publish { msg_id, flags, .. } = p
            && flags.qos == Qos::One
        {
            c.send(Packet::PubAck {
                topic_id,
                msg_id,
                rc: ReturnCode::Accepted,
            })
            .await;
        }
    }
    // asleep: the broker message is held until the client wakes
    assert_eq!(
        c.request(Packet::Disconnect { duration: Some(30) }).await,
        Packet::Disconnect { duration: None }
    );
    obs.publish("sn/cmd/heater/set", rumqttc::QoS::AtLeastOnce, false, "off")
        .await
        .unwrap();
    assert!(c.try_recv(Duration::from_millis(500)).await.is_none());
    c.send(Packet::PingReq {
        client_id: Some("e2e-sub".into()),
    })
    .await;
    let Packet::Publish { data, msg_id, .. } = c.recv().await else {
        panic!()
    };
    assert_eq!(data, b"off");
    c.send(Packet::PubAck {
        topic_id,
        msg_id,
        rc: ReturnCode::Accepted,
    })
    .await;
    assert_eq!(c.recv().await, Packet::PingResp);
}

#[tokio::test]
async fn will_reaches_mosquitto_on_keep_alive_expiry() {
    let Some(m) = mosquitto() else { return };
    let (_obs, mut rx) = observer(m.port, "status/#").await;
    let (gw, _stop) = start_direct(m.port, |_| {}).await;
    let c = Client::new(gw).await;
    c.send(Packet::Connect {
        flags: Flags {
            will: true,
            clean_session: true,
            ..Flags::default()
        },
        protocol_id: 1,
        duration: 1,
        client_id: "e2e-will".into(),
    })
    .await;
    assert_eq!(c.recv().await, Packet::WillTopicReq);
    c.send(Packet::WillTopic {
        will: Some(WillTopic {
            qos: Qos::One,
            retain: false,
            topic: "status/e2e-will".into(),
        }),
    })
    .await;
    assert_eq!(c.recv().await, Packet::WillMsgReq);
    assert_eq!(
        c.request(Packet::WillMsg {
            msg: b"lost".to_vec()
        })
        .await,
        Packet::ConnAck {
            rc: ReturnCode::Accepted
        }
    );
    let started = std::time::Instant::now();
    assert_eq!(
        next(&mut rx).await,
        ("status/e2e-will".into(), b"lost".to_vec(), false)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "not before 1.5 x keep-alive"
    );
}
