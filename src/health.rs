//! The gateway's own health: what every device last reported, the periodic sampling of state
//! gauges for Prometheus, and the retained JSON summary on `{prefix}/{gateway}/health`.
//!
//! The summary goes through the outbox like every other message, not around it: the outbox
//! is the only path to the broker (the upstream has no second publish queue, and one would
//! bypass ordering and acknowledgement tracking). So the summary is only queued while the
//! broker is connected: a gateway that is offline is already shown as `offline` by its last
//! will on the status topic, and summaries queued during an outage would only replay stale
//! figures. A fresh summary is queued at once on every (re)connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::clock::{ClockCheck, ClockPolicy};
use crate::message::{Message, QoS};
use crate::outbox::{Outbox, OutboxStats};
use crate::upstream::{UpstreamHandle, UpstreamStatus};

/// Health summary interval when the map has no `metrics.health_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How often state gauges are refreshed (cheap: a few locks and at most one indexed query).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Errors of this module (publishing the summary).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot encode the health summary: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
}

#[derive(Debug, Clone, Default)]
struct DeviceState {
    online: Option<bool>,
    last_success: Option<Instant>,
}

/// What each device of the map last reported. Fed by the router, read by the monitor and
/// at shutdown. Only devices of the map are tracked: names a source makes up at run time
/// (unmapped BLE sensors) would otherwise grow it without bound.
#[derive(Debug)]
pub struct DeviceBoard {
    started: Instant,
    devices: Mutex<BTreeMap<Arc<str>, DeviceState>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One device as seen by the board.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub name: Arc<str>,
    pub online: Option<bool>,
    /// Since the last good reading, or since start when there was none.
    pub last_success_age: Duration,
}

impl DeviceBoard {
    pub fn new(started: Instant) -> DeviceBoard {
        DeviceBoard {
            started,
            devices: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts tracking `names` (before their sources run, so no first event is missed).
    pub fn add(&self, names: &[Arc<str>]) {
        let mut d = lock(&self.devices);
        for n in names {
            d.entry(n.clone()).or_default();
        }
    }

    /// Makes the board list exactly `names` (after a reload stopped the old sources);
    /// returns the devices that were removed, so they can be marked offline.
    pub fn set_devices(&self, names: &[Arc<str>]) -> Vec<Arc<str>> {
        let mut d = lock(&self.devices);
        let removed: Vec<Arc<str>> = d.keys().filter(|k| !names.contains(k)).cloned().collect();
        for r in &removed {
            d.remove(r);
            ::metrics::gauge!("edgebus_device_online", "device" => r.to_string()).set(0.0);
        }
        for n in names {
            d.entry(n.clone()).or_default();
        }
        removed
    }

    pub fn reading(&self, device: &Arc<str>, good: bool) {
        if good && let Some(s) = lock(&self.devices).get_mut(device) {
            s.last_success = Some(Instant::now());
        }
    }

    pub fn availability(&self, device: &Arc<str>, online: bool) {
        if let Some(s) = lock(&self.devices).get_mut(device) {
            s.online = Some(online);
        }
    }

    pub fn snapshot(&self) -> Vec<DeviceView> {
        lock(&self.devices)
            .iter()
            .map(|(name, s)| DeviceView {
                name: name.clone(),
                online: s.online,
                last_success_age: s.last_success.unwrap_or(self.started).elapsed(),
            })
            .collect()
    }
}

/// The JSON published on `{prefix}/{gateway}/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub gateway: String,
    pub version: &'static str,
    pub ts: String,
    pub uptime_s: u64,
    pub clock_synced: bool,
    pub devices: DeviceCounts,
    pub outbox: OutboxHealth,
    pub upstream: UpstreamHealth,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceCounts {
    pub online: usize,
    pub offline: usize,
    /// Devices that have not reported availability yet.
    pub unknown: usize,
    /// Names of the offline devices, so an operator sees which.
    pub offline_devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxHealth {
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_s: f64,
    pub dropped: u64,
    pub spilled: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamHealth {
    pub connected: bool,
    pub connects: u64,
    pub reconnects: u64,
    pub failures: u64,
    pub in_flight: usize,
    pub acked: u64,
}

impl HealthReport {
    pub fn build(
        gateway: &str,
        uptime: Duration,
        clock_synced: bool,
        devices: &[DeviceView],
        outbox: &OutboxStats,
        upstream: &UpstreamStatus,
    ) -> HealthReport {
        let offline_devices: Vec<String> = devices
            .iter()
            .filter(|d| d.online == Some(false))
            .map(|d| d.name.to_string())
            .collect();
        HealthReport {
            gateway: gateway.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            ts: crate::format::rfc3339_ms(SystemTime::now()),
            uptime_s: uptime.as_secs(),
            clock_synced,
            devices: DeviceCounts {
                online: devices.iter().filter(|d| d.online == Some(true)).count(),
                offline: offline_devices.len(),
                unknown: devices.iter().filter(|d| d.online.is_none()).count(),
                offline_devices,
            },
            outbox: OutboxHealth {
                depth: outbox.depth,
                bytes: outbox.bytes,
                oldest_age_s: outbox.oldest_age.unwrap_or_default().as_secs_f64(),
                dropped: outbox.dropped,
                spilled: outbox.spilled,
            },
            upstream: UpstreamHealth {
                connected: upstream.connected,
                connects: upstream.connects,
                reconnects: upstream.connects.saturating_sub(1),
                failures: upstream.failures,
                in_flight: upstream.in_flight,
                acked: upstream.acked,
            },
        }
    }
}

/// Everything the monitor reads.
pub struct Monitor {
    pub gateway: String,
    /// `{prefix}/{gateway}/health`
    pub topic: String,
    pub interval: Duration,
    pub clock: ClockPolicy,
    pub started: Instant,
    pub board: Arc<DeviceBoard>,
    pub outbox: Outbox,
    pub upstream: UpstreamHandle,
}

impl Monitor {
    fn report(&self, clock: &ClockCheck) -> (HealthReport, Vec<DeviceView>, OutboxStats) {
        let devices = self.board.snapshot();
        let stats = self.outbox.stats();
        let status = self.upstream.status();
        let synced = clock.is_synced(SystemTime::now());
        let r = HealthReport::build(
            &self.gateway,
            self.started.elapsed(),
            synced,
            &devices,
            &stats,
            &status,
        );
        (r, devices, stats)
    }

    /// Queues the summary (retained, QoS 1).
    pub async fn publish(&self, report: &HealthReport) -> Result<(), HealthError> {
        let payload = serde_json::to_vec(report)?;
        let msg = Message::new(self.topic.clone(), payload, QoS::AtLeastOnce, true);
        self.outbox.push(msg).await?;
        Ok(())
    }

    /// Samples gauges every few seconds and queues the summary every `interval` (and on
    /// every new connection) until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let clock = ClockCheck::new(self.clock);
        // `health_interval: 0s` turns the summary off; gauges are still sampled.
        let enabled = !self.interval.is_zero();
        let period = if enabled {
            SAMPLE_EVERY.min(self.interval)
        } else {
            SAMPLE_EVERY
        };
        let mut sample = tokio::time::interval(period);
        let mut last_sent: Option<Instant> = None;
        let mut connects_seen = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sample.tick() => {}
            }
            let (report, devices, stats) = self.report(&clock);
            set_gauges(&report, &devices, &stats, &self.upstream.status());
            let new_connection = report.upstream.connects != connects_seen;
            let due = last_sent.is_none_or(|t| t.elapsed() >= self.interval);
            if enabled && report.upstream.connected && (new_connection || due) {
                connects_seen = report.upstream.connects;
                last_sent = Some(Instant::now());
                if let Err(e) = self.publish(&report).await {
                    tracing::warn!(error = %e, "health summary not queued");
                }
            }
        }
    }
}

/// Refreshes the sampled gauges (and counters that mirror another part's own figures).
fn set_gauges(r: &HealthReport, devices: &[DeviceView], stats: &OutboxStats, up: &UpstreamStatus) {
    use ::metrics::{counter, gauge};
    gauge!("edgebus_uptime_seconds").set(r.uptime_s as f64);
    gauge!("edgebus_clock_synced").set(if r.clock_synced { 1.0 } else { 0.0 });
    for d in devices {
        let name = d.name.to_string();
        gauge!("edgebus_device_last_success_age_seconds", "device" => name.clone())
            .set(d.last_success_age.as_secs_f64());
        if let Some(online) = d.online {
            gauge!("edgebus_device_online", "device" => name).set(if online { 1.0 } else { 0.0 });
        }
    }
    gauge!("edgebus_outbox_depth").set(stats.depth as f64);
    gauge!("edgebus_outbox_bytes").set(stats.bytes as f64);
    gauge!("edgebus_outbox_oldest_age_seconds").set(r.outbox.oldest_age_s);
    gauge!("edgebus_upstream_connected").set(if up.connected { 1.0 } else { 0.0 });
    gauge!("edgebus_upstream_in_flight").set(up.in_flight as f64);
    counter!("edgebus_upstream_reconnects_total").absolute(r.upstream.reconnects);
    counter!("edgebus_upstream_published_total").absolute(up.published);
    counter!("edgebus_upstream_acked_total").absolute(up.acked);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_tracks_devices_and_reports_removed_ones() {
        let b = DeviceBoard::new(Instant::now());
        let a: Arc<str> = Arc::from("a");
        let c: Arc<str> = Arc::from("c");
        b.add(&[a.clone(), c.clone()]);
        assert!(b.set_devices(&[a.clone(), c.clone()]).is_empty());
        b.availability(&Arc::from("not-in-the-map"), true);
        b.availability(&a, true);
        b.availability(&c, false);
        b.reading(&a, true);
        let s = b.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].online, Some(true));
        assert!(s[0].last_success_age < s[1].last_success_age + Duration::from_secs(1));
        assert_eq!(b.set_devices(std::slice::from_ref(&a)), vec![c]);
        assert_eq!(b.snapshot().len(), 1);
    }

    #[test]
    fn report_counts_devices_and_mirrors_figures() {
        let devices = vec![
            DeviceView {
                name: "m".into(),
                online: Some(true),
                last_success_age: Duration::ZERO,
            },
            DeviceView {
                name: "n".into(),
                online: Some(false),
                last_success_age: Duration::from_secs(9),
            },
            DeviceView {
                name: "o".into(),
                online: None,
                last_success_age: Duration::from_secs(9),
            },
        ];
        let stats = OutboxStats {
            depth: 7,
            bytes: 700,
            oldest_age: Some(Duration::from_millis(1500)),
            dropped: 2,
            spilled: 3,
            ..Default::default()
        };
        let up = UpstreamStatus {
            connected: true,
            connects: 3,
            acked: 40,
            ..Default::default()
        };
        let r = HealthReport::build("gw", Duration::from_secs(61), false, &devices, &stats, &up);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["gateway"], "gw");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["uptime_s"], 61);
        assert_eq!(v["clock_synced"], false);
        assert_eq!(v["devices"]["online"], 1);
        assert_eq!(v["devices"]["offline"], 1);
        assert_eq!(v["devices"]["unknown"], 1);
        assert_eq!(v["devices"]["offline_devices"][0], "n");
        assert_eq!(v["outbox"]["depth"], 7);
        assert_eq!(v["outbox"]["oldest_age_s"], 1.5);
        assert_eq!(v["upstream"]["reconnects"], 2);
        assert_eq!(v["upstream"]["acked"], 40);
    }
}
