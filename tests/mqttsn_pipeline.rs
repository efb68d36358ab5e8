//! The MQTT-SN gateway on the real outbox and upstream connection, against mosquitto:
//! nothing is lost while the broker is away, and broker messages reach subscribed nodes.

mod mqttsn_support;
mod upstream_support;

use std::sync::Arc;
use std::time::Duration;

use edgebus::mqttsn::MqttSnConfig;
use edgebus::mqttsn::codec::{Packet, Qos, ReturnCode, TopicRef};
use edgebus::mqttsn::runtime::Bound;
use edgebus::outbox::BufferConfig;
use mqttsn_support::Client;
use tokio_util::sync::CancellationToken;
use upstream_support::{Broker, Gateway, Recorder, have_mosquitto, plain};

async fn gateway_on_core(gw: &Gateway) -> (std::net::SocketAddr, CancellationToken) {
    let cfg = MqttSnConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        topic_prefix: "sn".into(),
        ..MqttSnConfig::default()
    };
    let b = Bound::bind(cfg).await.unwrap();
    let addr = b.local_addrs()[0];
    let stop = CancellationToken::new();
    tokio::spawn(b.run(
        Arc::new(gw.outbox.clone()),
        Arc::new(gw.handle.clone()),
        gw.handle.incoming(),
        stop.clone(),
    ));
    (addr, stop)
}

#[tokio::test]
async fn broker_outage_loses_nothing_and_keeps_order() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Broker::start("");
    let rec = Recorder::start(broker.port, "sn/#").await;
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &plain(broker.port));
    let (addr, _stop) = gateway_on_core(&gw).await;
    let mut c = Client::new(addr).await;
    c.connect("outage", 60).await;
    let id = c.register("meter/energy").await;
    for n in 0..60u32 {
        if n == 20 {
            broker.stop();
            // From here on the gateway knows the broker is away and keeps everything.
            assert!(
                upstream_support::eventually(20, || !gw.handle.status().connected).await,
                "the gateway notices the outage"
            );
        }
        if n == 45 {
            broker.start_again();
        }
        let qos = if n % 3 == 0 { Qos::Zero } else { Qos::One };
        let p = c.publish_packet(qos, id, n.to_string().as_bytes());
        if qos == Qos::Zero {
            c.send(p).await;
        } else {
            // acknowledged because the outbox holds it, broker or not
            let r = c.request(p).await;
            assert!(
                matches!(
                    r,
                    Packet::PubAck {
                        rc: ReturnCode::Accepted,
                        ..
                    }
                ),
                "{n}: {r:?}"
            );
        }
    }
    // QoS 0 is at most once: one written to the socket just as the broker dies may be gone
    // (the outbox lets it go once written). Everything sent once the outage was noticed, and
    // every QoS 1 message, must arrive.
    let must = |n: &u32| !n.is_multiple_of(3) || *n >= 21;
    let got = || -> Vec<u32> {
        rec.on("sn/meter/energy")
            .iter()
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
            .collect()
    };
    let ok = upstream_support::eventually(20, || {
        let g = got();
        (0..60u32).filter(must).all(|n| g.contains(&n))
    })
    .await;
    let got = got();
    assert!(
        ok,
        "missing: {:?} (got {got:?})",
        (0..60u32)
            .filter(must)
            .filter(|n| !got.contains(n))
            .collect::<Vec<_>>()
    );
    // In order within each QoS (the broker itself lets QoS 0 overtake QoS 1 messages queued
    // behind its in-flight window towards a subscriber).
    for class in [0u32, 1] {
        let mut firsts = Vec::new();
        for n in got.iter().filter(|n| u32::from(*n % 3 != 0) == class) {
            if !firsts.contains(n) {
                firsts.push(*n);
            }
        }
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "QoS class {class}: in order: {firsts:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn broker_messages_reach_a_wildcard_subscriber_through_the_upstream() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start("");
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &plain(broker.port));
    let (addr, _stop) = gateway_on_core(&gw).await;
    let c = Client::new(addr).await;
    c.connect("listener", 60).await;
    let r = c
        .request(Packet::Subscribe {
            dup: false,
            qos: Qos::One,
            msg_id: 1,
            topic: TopicRef::Name("cmd/#".into()),
        })
        .await;
    assert!(matches!(
        r,
        Packet::SubAck {
            rc: ReturnCode::Accepted,
            ..
        }
    ));
    let mut o = rumqttc::MqttOptions::new("sender", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (sender, mut el) = rumqttc::AsyncClient::new(o, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let mut got = None;
    for _ in 0..50 {
        sender
            .publish("sn/cmd/valve", rumqttc::QoS::AtLeastOnce, false, "open")
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
    assert_eq!(topic, "cmd/valve");
    c.send(Packet::RegAck {
        topic_id,
        msg_id,
        rc: ReturnCode::Accepted,
    })
    .await;
    match c.recv().await {
        Packet::Publish { data, flags, .. } => {
            assert_eq!(data, b"open");
            assert_eq!(flags.qos, Qos::One);
        }
        other => panic!("{other:?}"),
    }
    gw.stop().await;
}
