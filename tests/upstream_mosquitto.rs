//! Upstream against a real mosquitto: delivery, status topic, downlink, and faults (broker
//! down then back, repeated restarts, gateway crash during a drain), with exact counts from a
//! recording subscriber.

mod upstream_support;

use std::time::Duration;

use edgebus::message::QoS;
use edgebus::outbox::{BufferConfig, Durability};
use upstream_support::*;

fn topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("test/gw/t{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_with_status_and_downlink() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start("");
    let rec = Recorder::start(broker.port, "test/#").await;
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &plain(broker.port));
    let mut downlink = gw.handle.incoming();
    gw.handle
        .subscribe("test/gw/+/set".into(), QoS::AtLeastOnce);
    let ts = topics(3);
    for n in 0..3000u64 {
        let t = &ts[(n % 3) as usize];
        gw.outbox.push(numbered(t, n / 3)).await.unwrap();
    }
    assert!(
        eventually(30, || rec.count() >= 3001).await,
        "delivered {} of 3000",
        rec.count()
    );
    let dups = check_delivery(&rec.numbers("test/gw/t"), &ts, &[1000, 1000, 1000]);
    assert_eq!(dups, 0, "no duplicates without faults");
    assert!(eventually(5, || gw.outbox.stats().depth == 0).await);
    assert_eq!(rec.on(STATUS), vec![b"online".to_vec()]);
    let st = gw.handle.status();
    assert!(st.connected);
    assert_eq!(st.acked, 3000);
    assert_eq!(st.connects, 1);

    // Downlink: a write from another client reaches the receiver.
    let (c, mut el) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("writer", "127.0.0.1", broker.port),
        10,
    );
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c.publish(
        "test/gw/valve/set",
        rumqttc::QoS::AtLeastOnce,
        false,
        "open",
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), downlink.recv())
        .await
        .expect("downlink in time")
        .expect("downlink open");
    assert_eq!(m.topic, "test/gw/valve/set");
    assert_eq!(&m.payload[..], b"open");

    gw.stop().await;
    assert!(
        eventually(5, || rec.on(STATUS).last().map(|v| v.as_slice())
            == Some(b"offline"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_and_qos2_are_delivered_and_removed() {
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start("");
    let rec = Recorder::start(broker.port, "test/q/#").await;
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &plain(broker.port));
    for n in 0..200u64 {
        let mut m = numbered(
            if n % 2 == 0 {
                "test/q/zero"
            } else {
                "test/q/two"
            },
            n / 2,
        );
        m.qos = if n % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::ExactlyOnce
        };
        gw.outbox.push(m).await.unwrap();
    }
    assert!(
        eventually(20, || rec.count() >= 200).await,
        "{} delivered; outbox {:?}; upstream {:?}; {:?}\n{}",
        rec.count(),
        gw.outbox.stats(),
        gw.handle.status(),
        rec.numbers("test/q/"),
        broker.log().lines().take(30).collect::<Vec<_>>().join("\n")
    );
    let ts = vec!["test/q/two".to_string(), "test/q/zero".to_string()];
    check_delivery(&rec.numbers("test/q/"), &ts, &[100, 100]);
    assert!(eventually(5, || gw.outbox.stats().depth == 0).await);
    gw.stop().await;
}

/// Producer pushing numbered messages on 2 topics every `every` until told to stop.
fn produce(
    outbox: edgebus::outbox::Outbox,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut tick = tokio::time::interval(every);
        while !stop.is_cancelled() {
            tick.tick().await;
            for t in ["test/gw/a", "test/gw/b"] {
                outbox.push(numbered(t, n)).await.unwrap();
            }
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_30s_then_back_nothing_missing_order_kept() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Broker::start("");
    let rec = Recorder::start(broker.port, "test/gw/+").await;
    let data = tempfile::tempdir().unwrap();
    let up = plain(broker.port);
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &up);
    let stop = tokio_util::sync::CancellationToken::new();
    let prod = produce(gw.outbox.clone(), Duration::from_millis(10), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = gw.outbox.stats();
    assert!(during.depth > 1000, "backlog while down: {}", during.depth);
    assert!(
        during.on_disk > 0,
        "offline durability wrote the backlog: {during:?}"
    );
    assert!(!gw.handle.status().connected);
    broker.start_again();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let n = prod.await.unwrap();
    assert!(
        eventually(60, || gw.outbox.stats().depth == 0).await,
        "backlog drained: {:?}",
        gw.outbox.stats()
    );
    let ts = vec!["test/gw/a".to_string(), "test/gw/b".to_string()];
    eventually(20, || {
        rec.numbers("test/gw/")
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>()
            >= 2 * n
    })
    .await;
    let dups = check_delivery(&rec.numbers("test/gw/"), &ts, &[n, n]);
    let st = gw.handle.status();
    assert!(
        dups <= up.max_inflight as usize * st.connects as usize,
        "{dups} duplicates over {} connections",
        st.connects
    );
    assert_eq!(gw.outbox.stats().dropped, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_20_times_nothing_missing() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Broker::start("");
    let rec = Recorder::start(broker.port, "test/gw/+").await;
    let data = tempfile::tempdir().unwrap();
    let up = plain(broker.port);
    let gw = Gateway::start(data.path(), &BufferConfig::default(), &up);
    let stop = tokio_util::sync::CancellationToken::new();
    let prod = produce(gw.outbox.clone(), Duration::from_millis(2), stop.clone());
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300 + (i % 3) * 100)).await;
        let before = gw.handle.status().connects;
        broker.stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.start_again();
        // Each restart is a separate outage only once the gateway is back: a loaded machine
        // may otherwise fold two restarts into one reconnect.
        assert!(
            eventually(20, || gw.handle.status().connects > before).await,
            "reconnected after restart {i}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let n = prod.await.unwrap();
    assert!(
        eventually(60, || gw.outbox.stats().depth == 0).await,
        "drained: {:?}",
        gw.outbox.stats()
    );
    let ts = vec!["test/gw/a".to_string(), "test/gw/b".to_string()];
    eventually(20, || {
        rec.numbers("test/gw/")
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>()
            >= 2 * n
    })
    .await;
    let dups = check_delivery(&rec.numbers("test/gw/"), &ts, &[n, n]);
    let st = gw.handle.status();
    assert!(st.connects >= 20, "reconnected after every restart: {st:?}");
    assert!(
        dups <= up.max_inflight as usize * st.connects as usize,
        "{dups} duplicates over {} connections",
        st.connects
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_drain_loses_nothing_committed_duplicates_within_window() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Broker::start("");
    broker.stop();
    let data = tempfile::tempdir().unwrap();
    let buffer = BufferConfig {
        durability: Durability::Always,
        ..Default::default()
    };
    let mut up = plain(broker.port);
    up.max_inflight = 32;
    // Build a committed backlog with the broker down.
    let gw = Gateway::start(data.path(), &buffer, &up);
    let total = 20_000u64;
    for n in 0..total {
        gw.outbox.push(numbered("test/gw/c", n)).await.unwrap();
    }
    gw.outbox.sync().await.unwrap();
    gw.crash();
    broker.start_again();
    let rec = Recorder::start(broker.port, "test/gw/c").await;
    let mut crashes = 0;
    loop {
        let gw = Gateway::start(data.path(), &buffer, &up);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if gw.outbox.stats().depth == 0 || crashes == 5 {
            assert!(eventually(60, || gw.outbox.stats().depth == 0).await);
            gw.stop().await;
            break;
        }
        gw.crash();
        crashes += 1;
    }
    assert!(crashes >= 2, "the drain was interrupted");
    assert!(eventually(20, || rec.count() as u64 >= total).await);
    let dups = check_delivery(
        &rec.numbers("test/gw/"),
        &["test/gw/c".to_string()],
        &[total],
    );
    assert!(
        dups <= up.max_inflight as usize * crashes,
        "{dups} duplicates after {crashes} crashes (window {})",
        up.max_inflight
    );
    let conn = rusqlite::Connection::open(data.path().join("outbox.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
