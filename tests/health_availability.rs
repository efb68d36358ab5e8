//! The retained health summary and per-device availability, against a real mosquitto.

mod ops_support;
mod support;

use std::process::Command;

use ops_support::{config, start, wait_until};
use support::{Mosquitto, Recorder, free_port, have_mosquitto};

fn map(data: &std::path::Path, url: &str, devices: &[&str]) -> String {
    let mut y = format!(
        "gateway: {{id: gw, data_dir: {}}}\nupstream: {{url: '{url}', topic_prefix: plant}}\n\
         metrics: {{health_interval: 1s}}\n",
        data.display()
    );
    if !devices.is_empty() {
        y.push_str("devices:\n");
    }
    for d in devices {
        y.push_str(&format!(
            "  - {{name: {d}, type: synthetic, poll: 200ms}}\n"
        ));
    }
    y
}

/// The retained message a new subscriber gets on `topic`.
fn retained(port: u16, topic: &str) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-C", "1", "-W", "5", "--retained-only"])
        .output()
        .expect("run mosquitto_sub");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_summary_is_published_retained_and_tells_the_state() {
    if !have_mosquitto() {
        return;
    }
    let broker = Mosquitto::start(free_port());
    let rec = Recorder::start(broker.port, "plant/gw/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw = start(dir.path(), &map(&data, &broker.url(), &["a", "b"])).await;
    let topic = "plant/gw/health";
    wait_until(30, "three summaries with both devices online", || {
        let p = rec.payloads(topic);
        p.len() >= 3
            && p.last()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .is_some_and(|v| v["devices"]["online"] == 2)
    })
    .await;
    let all = rec.payloads(topic);
    let first: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    let last: serde_json::Value = serde_json::from_str(all.last().unwrap()).unwrap();
    assert_eq!(last["gateway"], "gw");
    assert_eq!(last["version"], env!("CARGO_PKG_VERSION"));
    assert!(last["uptime_s"].as_u64().unwrap() >= first["uptime_s"].as_u64().unwrap());
    // The clock rule (default `kernel`): the summary and every reading agree with adjtimex.
    let synced = edgebus::clock::kernel_synced();
    assert_eq!(last["clock_synced"], synced);
    let reading: serde_json::Value =
        serde_json::from_str(rec.payloads("plant/gw/a/counter").last().unwrap()).unwrap();
    assert_eq!(
        reading.get("clock").is_none(),
        synced,
        "readings are flagged exactly while the clock is unsynchronised: {reading}"
    );
    assert_eq!(last["devices"]["offline"], 0);
    assert_eq!(last["upstream"]["connected"], true);
    assert!(last["upstream"]["connects"].as_u64().unwrap() >= 1);
    assert!(last["upstream"]["acked"].as_u64().unwrap() > 0);
    for k in ["depth", "bytes", "oldest_age_s", "dropped", "spilled"] {
        assert!(last["outbox"][k].is_number(), "outbox.{k}: {last}");
    }
    let ts = last["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");

    // Retained: a subscriber that comes later gets the summary at once.
    let late: serde_json::Value =
        serde_json::from_str(&retained(broker.port, topic)).expect("a retained health summary");
    assert_eq!(late["gateway"], "gw");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_say_online_at_start_and_offline_when_removed_or_stopped() {
    if !have_mosquitto() {
        return;
    }
    let broker = Mosquitto::start(free_port());
    let rec = Recorder::start(broker.port, "plant/gw/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut gw = start(dir.path(), &map(&data, &broker.url(), &["a", "b"])).await;
    let (a, b) = ("plant/gw/a/availability", "plant/gw/b/availability");
    wait_until(30, "both devices online", || {
        rec.payloads(a) == ["online"] && rec.payloads(b) == ["online"]
    })
    .await;

    // `b` leaves the map: it is published offline once; `a` is untouched.
    let smaller = config(dir.path(), &map(&data, &broker.url(), &["a"]));
    gw.reload(smaller).await.unwrap();
    wait_until(30, "b offline after the reload", || {
        rec.payloads(b) == ["online", "offline"]
    })
    .await;
    assert_eq!(retained(broker.port, b), "offline");

    // Graceful stop: the remaining device goes offline before the gateway does.
    gw.shutdown().await.unwrap();
    wait_until(30, "a and the gateway offline", || {
        rec.payloads(a).last().map(String::as_str) == Some("offline")
            && rec.payloads("plant/gw/status").last().map(String::as_str) == Some("offline")
    })
    .await;
    let lines = rec.lines.lock().unwrap().clone();
    let pos = |t: &str, p: &str| lines.iter().rposition(|(tt, pp)| tt == t && pp == p);
    assert!(
        pos(a, "offline") < pos("plant/gw/status", "offline"),
        "device offline after the gateway's: {lines:?}"
    );
    assert!(!rec.payloads(b).ends_with(&["online".to_string()]));
    assert_eq!(retained(broker.port, a), "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_offline_is_queued_when_stopping_during_an_outage() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Mosquitto::start(free_port());
    let rec = Recorder::start(broker.port, "plant/gw/#");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw = start(dir.path(), &map(&data, &broker.url(), &["a"])).await;
    let a = "plant/gw/a/availability";
    wait_until(30, "a online", || rec.payloads(a) == ["online"]).await;
    broker.stop();
    wait_until(30, "disconnected with readings buffered", || {
        !gw.upstream().status().connected && gw.outbox().stats().depth >= 3
    })
    .await;
    gw.shutdown().await.unwrap();

    // Next start, without `a`: the backlog drains and holds no `offline` for it.
    drop(rec);
    broker.restart();
    let rec = Recorder::start(broker.port, "plant/gw/#");
    let gw = start(dir.path(), &map(&data, &broker.url(), &[])).await;
    wait_until(30, "backlog delivered", || {
        gw.upstream().status().connected && gw.outbox().stats().depth == 0
    })
    .await;
    assert!(
        !rec.payloads("plant/gw/a/counter").is_empty(),
        "readings buffered during the outage arrive"
    );
    assert!(rec.payloads(a).is_empty(), "{:?}", rec.payloads(a));
    gw.shutdown().await.unwrap();
}
