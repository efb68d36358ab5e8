//! The Prometheus endpoint of a running gateway (synthetic source, real mosquitto): the key
//! series are served, with help text, and move the way the gateway's state does, also
//! through a broker outage. One test: a process has one global metrics recorder.

mod modbus_support;
mod ops_support;
mod support;

use std::io::{Read, Write};
use std::time::Duration;

use modbus_support::{Sim, TcpSim};
use ops_support::{http_get, series, start, wait_until};
use support::{Mosquitto, free_port, have_mosquitto};
use tokio_modbus::prelude::ExceptionCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_key_series_through_an_outage() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Mosquitto::start(free_port());
    // Unit 1 answers; unit 2 answers every request with an exception.
    let sim = Sim::default();
    sim.unit(1, |u| u.input[0] = 230);
    sim.unit(2, |u| u.fail = Some(ExceptionCode::IllegalFunction));
    let server = TcpSim::start(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let bind: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "gateway: {{id: metrics-gw, data_dir: {}}}\n\
         upstream: {{url: '{}', reconnect_min: 100ms, reconnect_max: 500ms}}\n\
         metrics: {{bind: '{bind}', health_interval: 1s}}\n\
         buses:\n  - {{name: plc, type: modbus-tcp, host: 127.0.0.1, port: {port}}}\n\
         devices:\n  - {{name: gen, type: synthetic, poll: 50ms}}\n\
         \x20 - {{name: meter, bus: plc, unit: 1, poll: 100ms, points: [{{name: v, register: input, address: 0}}]}}\n\
         \x20 - {{name: broken, bus: plc, unit: 2, poll: 100ms, points: [{{name: v, register: input, address: 0}}]}}\n",
        dir.path().join("data").display(),
        broker.url(),
        port = server.addr.port(),
    );
    let gw = start(dir.path(), &yaml).await;
    let scrape = || http_get(bind, "/metrics").unwrap_or_default();

    wait_until(30, "readings acknowledged and gauges sampled", || {
        let t = scrape();
        series(&t, "edgebus_upstream_acked_total", &[]).unwrap_or(0.0) >= 5.0
            && series(&t, "edgebus_upstream_connected", &[]) == Some(1.0)
            && series(&t, "edgebus_device_online", &[("device", "gen")]) == Some(1.0)
            && series(
                &t,
                "edgebus_device_reads_total",
                &[("device", "gen"), ("result", "ok")],
            )
            .unwrap_or(0.0)
                >= 5.0
            && series(&t, "edgebus_upstream_connects_total", &[]).unwrap_or(0.0) >= 1.0
    })
    .await;
    let t = scrape();
    for name in [
        "edgebus_outbox_depth",
        "edgebus_outbox_bytes",
        "edgebus_device_reads_total",
        "edgebus_upstream_in_flight",
    ] {
        assert!(
            t.contains(&format!("# HELP {name} ")),
            "no help text for {name}"
        );
    }
    let ok = series(
        &t,
        "edgebus_device_reads_total",
        &[("device", "gen"), ("result", "ok")],
    );
    assert!(ok.unwrap_or(0.0) >= 5.0, "reads ok: {ok:?}");
    assert_eq!(
        series(
            &t,
            "edgebus_device_reads_total",
            &[("device", "gen"), ("result", "failed")]
        ),
        None,
        "a generator never fails"
    );
    let readings = series(&t, "edgebus_readings_total", &[("device", "gen")]).unwrap_or(0.0);
    assert!(
        readings >= ok.unwrap_or(0.0),
        "readings {readings} < reads ok"
    );
    let age = series(
        &t,
        "edgebus_device_last_success_age_seconds",
        &[("device", "gen")],
    );
    assert!(age.is_some_and(|a| (0.0..60.0).contains(&a)), "age {age:?}");
    assert!(series(&t, "edgebus_upstream_connects_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(series(&t, "edgebus_uptime_seconds", &[]).is_some());

    // Clients that connect and say nothing do not hold the endpoint; other methods get 405.
    let silent: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(bind).unwrap())
        .collect();
    assert!(series(&scrape(), "edgebus_uptime_seconds", &[]).is_some());
    drop(silent);
    let mut post = std::net::TcpStream::connect(bind).unwrap();
    post.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    post.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    post.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // Modbus: per-device results, per-bus latency, and the age of the last good reading.
    wait_until(30, "Modbus reads ok and failed", || {
        let t = scrape();
        series(
            &t,
            "edgebus_device_reads_total",
            &[("device", "meter"), ("result", "ok")],
        )
        .unwrap_or(0.0)
            >= 2.0
            && series(
                &t,
                "edgebus_device_reads_total",
                &[("device", "broken"), ("result", "failed")],
            )
            .unwrap_or(0.0)
                >= 2.0
            && series(
                &t,
                "edgebus_device_last_success_age_seconds",
                &[("device", "broken")],
            )
            .is_some()
    })
    .await;
    let t = scrape();
    assert_eq!(
        series(
            &t,
            "edgebus_device_reads_total",
            &[("device", "broken"), ("result", "ok")]
        ),
        None
    );
    let requests = series(
        &t,
        "edgebus_modbus_request_seconds_count",
        &[("bus", "plc")],
    );
    assert!(
        requests.unwrap_or(0.0) >= 4.0,
        "latency samples: {requests:?}"
    );
    assert!(
        t.contains("edgebus_modbus_request_seconds_bucket{bus=\"plc\",le=\"0.005\"}"),
        "histogram buckets"
    );
    let never = series(
        &t,
        "edgebus_device_last_success_age_seconds",
        &[("device", "broken")],
    );
    let recent = series(
        &t,
        "edgebus_device_last_success_age_seconds",
        &[("device", "meter")],
    );
    assert!(never >= recent, "never-good {never:?} vs recent {recent:?}");
    let synced = series(&t, "edgebus_clock_synced", &[]);
    assert!(
        matches!(synced, Some(v) if v == 0.0 || v == 1.0),
        "{synced:?}"
    );

    // Broker down: the connection gauge drops and the outbox fills.
    broker.stop();
    wait_until(30, "disconnected with a backlog", || {
        let t = scrape();
        series(&t, "edgebus_upstream_connected", &[]) == Some(0.0)
            && series(&t, "edgebus_outbox_depth", &[]).unwrap_or(0.0) > 0.0
            && series(&t, "edgebus_outbox_bytes", &[]).unwrap_or(0.0) > 0.0
            && series(&t, "edgebus_outbox_oldest_age_seconds", &[]).unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(
        series(&scrape(), "edgebus_upstream_connection_failures_total", &[]).unwrap_or(0.0) >= 1.0
    );

    // Back up: one reconnect, and the backlog drains.
    broker.restart();
    wait_until(30, "reconnected and drained", || {
        let t = scrape();
        series(&t, "edgebus_upstream_connected", &[]) == Some(1.0)
            && series(&t, "edgebus_upstream_reconnects_total", &[]).unwrap_or(0.0) >= 1.0
            && series(&t, "edgebus_outbox_depth", &[]).unwrap_or(f64::MAX) < 50.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.shutdown().await.unwrap();
    server.stop().await;
}
