//! Prometheus metrics: the one list of every `edgebus_*` series with its help text, and the
//! exporter (metrics-exporter-prometheus's recorder behind a small HTTP endpoint, `metrics.bind`).
//!
//! Counters are incremented where things happen, all over the crate. Gauges that describe a
//! state owned by another part (outbox depth, upstream connection, device ages) are sampled
//! periodically by [`crate::health::Monitor`] instead, so those parts need no metrics code.
//! A unit test keeps this list, the source and the README in step.

#[cfg(feature = "prometheus")]
mod http;

use std::net::SocketAddr;

/// Errors installing the exporter.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics endpoint {0}: {1}")]
    Listen(SocketAddr, String),
    #[error("a metrics endpoint already runs on {0} in this process; {1} is not started")]
    AlreadyInstalled(SocketAddr, SocketAddr),
    #[error(
        "metrics endpoint {0}: this build has no Prometheus endpoint (cargo feature `prometheus`)"
    )]
    NotBuilt(SocketAddr),
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric the gateway exports: name, kind, help.
#[rustfmt::skip]
pub const METRICS: &[(&str, Kind, &str)] = &[
    // Gateway and devices (all sources).
    ("edgebus_uptime_seconds", G, "Seconds since the gateway started."),
    ("edgebus_clock_synced", G, "1 when reading timestamps are trusted (see clock_check), else 0."),
    ("edgebus_readings_total", C, "Readings received from sources, per device."),
    ("edgebus_readings_dropped_total", C, "Readings dropped before formatting, by reason."),
    ("edgebus_device_reads_total", C, "Readings per device by result: ok (good quality) or failed (bad or uncertain)."),
    ("edgebus_device_last_success_age_seconds", G, "Seconds since the device last gave a good reading (since start if never)."),
    ("edgebus_device_online", G, "Device availability as last reported by its source: 1 online, 0 offline."),
    ("edgebus_commands_rejected_total", C, "Writes rejected because too many were waiting for the device."),
    // Outbox.
    ("edgebus_outbox_depth", G, "Messages queued in the outbox (not yet acknowledged or dropped)."),
    ("edgebus_outbox_bytes", G, "Size of the queued messages as counted against buffer.max_bytes."),
    ("edgebus_outbox_oldest_age_seconds", G, "Age of the oldest queued message (0 when empty)."),
    ("edgebus_outbox_dropped_total", C, "Messages dropped by a buffer limit, by reason."),
    ("edgebus_outbox_spilled_total", C, "Messages written to disk."),
    ("edgebus_outbox_acked_total", C, "Messages removed from the outbox after the broker acknowledged them."),
    ("edgebus_outbox_congestion_total", C, "Messages refused because the outbox was at max_bytes and the producer may not evict (MQTT-SN publishes)."),
    ("edgebus_outbox_push_errors_total", C, "Messages the outbox refused."),
    ("edgebus_outbox_read_errors_total", C, "Failed reads of the on-disk backlog."),
    ("edgebus_outbox_quarantined_total", C, "Unreadable rows moved aside."),
    ("edgebus_outbox_full_disk_errors_total", C, "Commits refused because the disk is full."),
    ("edgebus_outbox_write_errors_total", C, "Commits that failed for another reason."),
    // Upstream.
    ("edgebus_upstream_connected", G, "1 while connected to the broker."),
    ("edgebus_upstream_connects_total", C, "Successful connections to the broker."),
    ("edgebus_upstream_reconnects_total", C, "Successful connections after the first one."),
    ("edgebus_upstream_connection_failures_total", C, "Failed connection attempts and lost connections."),
    ("edgebus_upstream_in_flight", G, "Publishes awaiting acknowledgement."),
    ("edgebus_upstream_published_total", C, "Outbox messages handed to the broker (re-sends included)."),
    ("edgebus_upstream_acked_total", C, "Outbox messages acknowledged by the broker."),
    ("edgebus_upstream_rejected_total", C, "Messages the broker refused for good or that can never be sent."),
    ("edgebus_upstream_downlink_dropped_total", C, "Downlink messages dropped because a consumer fell behind."),
    // Modbus.
    ("edgebus_modbus_requests_total", C, "Modbus requests, per bus, device and function code."),
    ("edgebus_modbus_request_seconds", H, "Modbus request latency per bus."),
    ("edgebus_modbus_errors_total", C, "Modbus errors per bus, device and kind (timeout, exception, io, protocol, short, not_connected, decode)."),
    ("edgebus_modbus_retries_total", C, "Modbus requests retried."),
    ("edgebus_modbus_connects_total", C, "Modbus connections opened, per bus."),
    ("edgebus_modbus_connect_failures_total", C, "Modbus connections that could not be opened, per bus."),
    ("edgebus_modbus_writes_total", C, "Modbus writes by result."),
    ("edgebus_modbus_device_online", G, "Modbus device answering: 1, or 0."),
    // Serial.
    ("edgebus_serial_readings_total", C, "Readings parsed from serial lines, per bus and device."),
    ("edgebus_serial_garbage_total", C, "Serial lines or values that could not be used, by reason."),
    ("edgebus_serial_request_seconds", H, "Polled serial devices: time from request to the first reply line, per bus."),
    ("edgebus_serial_poll_timeouts_total", C, "Polled serial devices that did not answer in time."),
    ("edgebus_serial_port_errors_total", C, "Serial port open or I/O errors, per bus."),
    // Bluetooth LE.
    ("edgebus_ble_adverts_total", C, "BLE advertisements seen, per bus."),
    ("edgebus_ble_decode_errors_total", C, "BLE advertisements that could not be decoded, per device and reason."),
    ("edgebus_ble_rejected_total", C, "BLE advertisements rejected (plaintext where a key is set, replay)."),
    ("edgebus_ble_duplicates_total", C, "Repeated BLE advertisements ignored."),
    ("edgebus_ble_throttled_total", C, "BLE readings held back by the per-device rate limit."),
    ("edgebus_ble_unknown_dropped_total", C, "Advertisements of unknown devices dropped."),
    ("edgebus_ble_gatt_errors_total", C, "GATT connect, read or decode errors."),
    ("edgebus_ble_unavailable_total", C, "Failed attempts to start scanning (adapter missing or down)."),
    ("edgebus_ble_watchdog_recoveries_total", C, "Scan recoveries by the watchdog, by action."),
    ("edgebus_ble_replay_bad_lines_total", C, "Unusable lines in a BLE replay file."),
    // MQTT-SN.
    ("edgebus_mqttsn_clients", G, "MQTT-SN clients with a session."),
    ("edgebus_mqttsn_clients_lost_total", C, "MQTT-SN clients dropped after missing their keep-alive."),
    ("edgebus_mqttsn_datagrams_total", C, "MQTT-SN datagrams received."),
    ("edgebus_mqttsn_packets_total", C, "MQTT-SN packets received, by type."),
    ("edgebus_mqttsn_packets_sent_total", C, "MQTT-SN packets sent, by type."),
    ("edgebus_mqttsn_dropped_total", C, "MQTT-SN datagrams or packets dropped (malformed, too large, rate limited ...), by reason."),
    ("edgebus_mqttsn_congestion_total", C, "MQTT-SN requests answered with the congestion return code."),
    ("edgebus_mqttsn_uplink_total", C, "MQTT-SN publishes forwarded to the broker, by QoS."),
    ("edgebus_mqttsn_downlink_total", C, "Broker messages delivered to MQTT-SN clients."),
    ("edgebus_mqttsn_retransmissions_total", C, "MQTT-SN publishes re-sent to clients."),
];

/// Latency buckets (seconds) for request histograms: a Modbus RTU request at 9600 Bd takes
/// tens of milliseconds, a timeout is seconds.
#[cfg(feature = "prometheus")]
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Registers the help text of every metric with the installed recorder.
pub fn describe_all() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => ::metrics::describe_counter!(name, help),
            Kind::Gauge => ::metrics::describe_gauge!(name, help),
            Kind::Histogram => ::metrics::describe_histogram!(name, help),
        }
    }
}

/// The address of the endpoint installed in this process, if any (one recorder per process).
#[cfg(feature = "prometheus")]
static INSTALLED: std::sync::Mutex<Option<SocketAddr>> = std::sync::Mutex::new(None);

/// How often histogram samples are folded into their buckets when nobody scrapes.
#[cfg(feature = "prometheus")]
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the Prometheus endpoint on `bind` and installs the global recorder.
///
/// The endpoint is a few lines of blocking HTTP on plain threads (see [`http`]) rather than
/// the exporter's hyper listener: hyper and h2 cost ~0.5 MB of a binary that must stay small
/// on a Pi, for a server that answers one kind of request. Being on its own threads, a scrape
/// is answered even when the gateway's runtime is busy, and it outlives the runtime that
/// started it (a process may start several gateways in tests; only the first installs the
/// recorder).
#[cfg(feature = "prometheus")]
pub fn install(bind: SocketAddr) -> Result<(), MetricsError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use std::net::TcpListener;

    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(first) = *installed {
        return if first == bind {
            Ok(())
        } else {
            Err(MetricsError::AlreadyInstalled(first, bind))
        };
    }
    let listener =
        TcpListener::bind(bind).map_err(|e| MetricsError::Listen(bind, e.to_string()))?;
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Listen(bind, e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder)
        .map_err(|e| MetricsError::Listen(bind, e.to_string()))?;
    let upkeep = handle.clone();
    spawn_thread("metrics-upkeep", bind, move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        }
    })?;
    spawn_thread("metrics-http", bind, move || http::serve(listener, handle))?;
    *installed = Some(bind);
    describe_all();
    tracing::info!(bind = %bind, "Prometheus metrics endpoint listening");
    Ok(())
}

/// Without the `prometheus` feature there is no endpoint: `metrics.bind` is reported, the
/// gateway runs on (as when the address cannot be bound).
#[cfg(not(feature = "prometheus"))]
pub fn install(bind: SocketAddr) -> Result<(), MetricsError> {
    Err(MetricsError::NotBuilt(bind))
}

#[cfg(feature = "prometheus")]
fn spawn_thread(
    name: &str,
    bind: SocketAddr,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), MetricsError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| MetricsError::Listen(bind, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `edgebus_…` token in `text`.
    fn names_in(text: &str) -> BTreeSet<String> {
        let re = regex_lite::Regex::new(r"edgebus_[a-z0-9_]+").unwrap();
        re.find_iter(text).map(|m| m.as_str().to_string()).collect()
    }

    #[test]
    fn every_metric_is_described_once_and_documented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let mut used = BTreeSet::new();
        for f in &files {
            used.extend(names_in(&std::fs::read_to_string(f).unwrap()));
        }
        let described: BTreeSet<String> = METRICS.iter().map(|m| m.0.to_string()).collect();
        assert_eq!(described.len(), METRICS.len(), "a metric is listed twice");
        let undescribed: Vec<_> = used.difference(&described).collect();
        assert!(undescribed.is_empty(), "not in METRICS: {undescribed:?}");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let ops = readme
            .split("\n## Operations")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has an Operations section");
        let documented = names_in(ops);
        let missing: Vec<_> = described.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "not in README's Operations: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&described).collect();
        assert!(stale.is_empty(), "README lists unknown metrics: {stale:?}");
    }

    #[test]
    #[cfg(not(feature = "prometheus"))]
    fn without_the_feature_the_endpoint_is_reported_not_started() {
        let bind: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let e = install(bind).unwrap_err();
        assert!(matches!(e, MetricsError::NotBuilt(b) if b == bind), "{e}");
        assert!(e.to_string().contains("cargo feature `prometheus`"), "{e}");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for &(name, kind, help) in METRICS {
            assert!(!help.is_empty(), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                kind == Kind::Counter,
                "{name}: counters, and only counters, end in _total"
            );
        }
    }
}
