//! `type: ble` — Bluetooth LE sensors. Passive advert reception with real decoders
//! (BTHome v2, RuuviTag, ATC1441/pvvx, MiBeacon, iBeacon, Eddystone), GATT reads and
//! notifications for connected devices, and a scan watchdog for BlueZ stalls.
//!
//! Privacy: only devices in the map are published; unknown devices only when
//! `publish_unknown` is set, and then under a keyed hash of their MAC.
//!
//! Counters: `edgebus_ble_adverts_total{bus}`, `edgebus_ble_decode_errors_total{device,reason}`,
//! `edgebus_ble_duplicates_total{device}`, `edgebus_ble_throttled_total{device}`,
//! `edgebus_ble_rejected_total{device,reason=plaintext|replay}`,
//! `edgebus_ble_unknown_dropped_total{bus}`, `edgebus_ble_watchdog_recoveries_total{bus,action}`,
//! `edgebus_ble_unavailable_total{bus}`, `edgebus_ble_gatt_errors_total{device,reason}`,
//! `edgebus_ble_replay_bad_lines_total`.

pub mod advert;
pub mod config;
pub mod decode;
pub mod engine;
pub mod gatt;
pub mod scan;
pub mod scanner;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;

use self::config::{BleBus, BleDevice, DecoderChoice, parse_key, parse_uuid};
use self::decode::Format;
use self::engine::{DeviceSpec, Engine, UnknownSpec};
use self::gatt::{Backoff, GattDevice};
use self::scanner::{ScanError, Scanner};
use self::watchdog::{Action, Watchdog};
use super::{BuiltSource, CatalogEntry, Kind, Source, SourceContext, SourceEvent};
use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec as MapDevice, PointCommon};

pub use scan::{ScanOptions, scan_and_print};

pub const KIND: Kind = Kind {
    bus_types: &["ble"],
    device_type: None,
    build,
};

/// Where adverts come from.
pub enum ScannerSpec {
    Bluez {
        adapter: Option<String>,
    },
    Replay {
        path: PathBuf,
        interval: Duration,
        looping: bool,
    },
    /// A ready scanner (tests, embedding).
    Given(Box<dyn Scanner>),
}

impl ScannerSpec {
    /// Creates the scanner (no I/O yet: that happens in `start`).
    pub fn into_scanner(self) -> Result<Box<dyn Scanner>, ScanError> {
        match self {
            ScannerSpec::Given(s) => Ok(s),
            ScannerSpec::Replay {
                path,
                interval,
                looping,
            } => Ok(Box::new(scanner::replay::ReplayScanner::new(
                &path, interval, looping,
            ))),
            #[cfg(feature = "ble")]
            ScannerSpec::Bluez { adapter } => {
                Ok(Box::new(scanner::bluez::BluezScanner::new(adapter)))
            }
            #[cfg(not(feature = "ble"))]
            ScannerSpec::Bluez { .. } => Err(ScanError::Unavailable(
                "this edgebus was built without Bluetooth support (cargo feature `ble`)".into(),
            )),
        }
    }
}

/// One adapter and every device mapped on it.
pub struct BleSource {
    bus: Arc<str>,
    cfg: BleBus,
    devices: Vec<DeviceSpec>,
    gatt: Vec<GattDevice>,
    unknown: Option<UnknownSpec>,
    scanner: Option<ScannerSpec>,
}

impl BleSource {
    /// Replaces where adverts come from (tests inject a fake scanner).
    pub fn with_scanner(mut self, s: ScannerSpec) -> BleSource {
        self.scanner = Some(s);
        self
    }

    fn all_offline(&self) -> Vec<SourceEvent> {
        let mut names: Vec<Arc<str>> = Vec::new();
        let adverts = self
            .devices
            .iter()
            .filter(|d| d.decoder != DecoderChoice::None)
            .map(|d| &d.name);
        for n in adverts.chain(self.gatt.iter().map(|g| &g.name)) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
            .into_iter()
            .map(|device| SourceEvent::Availability {
                device,
                online: false,
            })
            .collect()
    }

    /// Replaces the watchdog settings without the config's sanity limits (tests).
    pub fn with_watchdog(mut self, w: config::WatchdogConfig) -> BleSource {
        self.cfg.watchdog = w;
        self
    }
}

fn build(
    config: &Config,
    bus: Option<&BusSpec>,
    devices: &[&MapDevice],
) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>> {
    let Some(bus) = bus else {
        return Err(devices
            .iter()
            .map(|d| ConfigIssue::new(d.path.clone(), "ble devices need a `bus:` of type ble"))
            .collect());
    };
    let src = build_source(config, bus, devices)?;
    Ok(vec![src])
}

/// Builds the source of one `ble` bus (no I/O).
pub fn build_source(
    config: &Config,
    bus: &BusSpec,
    devices: &[&MapDevice],
) -> Result<BuiltSource, Vec<ConfigIssue>> {
    let (source, catalog) = build_ble(config, bus, devices)?;
    Ok(BuiltSource {
        source: Box::new(source),
        catalog,
    })
}

/// Like [`build_source`], with the concrete type (to swap the scanner in tests).
pub fn build_ble(
    config: &Config,
    bus: &BusSpec,
    devices: &[&MapDevice],
) -> Result<(BleSource, Vec<CatalogEntry>), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let cfg: BleBus = match bus.parse() {
        Ok(c) => c,
        Err(e) => return Err(vec![e]),
    };
    issues.extend(cfg.validate(&bus.path));
    let mut specs = Vec::new();
    let mut gatts = Vec::new();
    let mut catalog = Vec::new();
    let mut macs = std::collections::HashMap::new();
    for d in devices {
        let dev: BleDevice = match d.parse() {
            Ok(v) => v,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        issues.extend(dev.validate(&d.path));
        if let Some(m) = dev.mac
            && let Some(first) = macs.insert(m, d.common.name.clone())
        {
            issues.push(ConfigIssue::new(
                d.path.key("mac"),
                format!("MAC {m} is already used by device `{first}`"),
            ));
        }
        if !dev.gatt.is_empty() && dev.mac.is_none() {
            issues.push(ConfigIssue::new(
                d.path.key("gatt"),
                "GATT points need the device's `mac`",
            ));
        }
        let name: Arc<str> = Arc::from(d.common.name.as_str());
        let mut add = |p: PointCommon, path: crate::config::Path| {
            catalog.push(CatalogEntry {
                device: name.clone(),
                point: p,
                path,
                kind: Default::default(),
            });
        };
        match (&dev.points, dev.decoder.format()) {
            (Some(ps), _) => {
                for (i, p) in ps.iter().enumerate() {
                    add(p.common.clone(), d.path.key("points").index(i));
                }
            }
            (None, Some(f)) => {
                for (n, u) in f.typical_points() {
                    let p = PointCommon {
                        name: n.to_string(),
                        unit: u.map(str::to_string),
                        ..Default::default()
                    };
                    add(p, d.path.key("decoder"));
                }
            }
            (None, None) => {}
        }
        for (i, p) in dev.gatt.iter().enumerate() {
            add(p.common.clone(), d.path.key("gatt").index(i));
        }
        if dev.rssi && dev.decoder != DecoderChoice::None {
            add(
                PointCommon {
                    name: "rssi".into(),
                    unit: Some("dBm".into()),
                    ..Default::default()
                },
                d.path.key("rssi"),
            );
        }
        specs.push(DeviceSpec {
            name: name.clone(),
            mac: dev.mac,
            local_name: dev.local_name.clone(),
            decoder: dev.decoder,
            key: dev.bind_key.as_ref().and_then(|k| parse_key(k.expose())),
            min_interval: dev
                .min_interval
                .or(cfg.min_interval)
                .unwrap_or(config::DEFAULT_MIN_INTERVAL),
            offline_after: dev
                .offline_after
                .or(cfg.offline_after)
                .unwrap_or(config::DEFAULT_OFFLINE_AFTER),
            rssi: dev.rssi,
            points: dev.points.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p.kind.from.clone().unwrap_or_else(|| p.common.name.clone()),
                            p.common.clone(),
                        )
                    })
                    .collect()
            }),
        });
        if let (Some(mac), false) = (dev.mac, dev.gatt.is_empty()) {
            gatts.push(GattDevice {
                name: name.clone(),
                mac,
                points: dev
                    .gatt
                    .iter()
                    .map(|p| {
                        let svc = parse_uuid(&p.kind.service).unwrap_or_default();
                        let ch = parse_uuid(&p.kind.characteristic).unwrap_or_default();
                        (p.common.clone(), p.kind.clone(), svc, ch)
                    })
                    .collect(),
                default_poll: d.common.poll.unwrap_or(Duration::from_secs(60)),
                availability: dev.decoder == DecoderChoice::None,
            });
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let unknown = cfg.publish_unknown.as_ref().map(|u| UnknownSpec {
        hash_key: u.hash_key.expose().as_bytes().to_vec(),
        prefix: u.prefix.clone(),
        formats: u.formats.clone().unwrap_or_else(|| {
            vec![
                Format::Bthome,
                Format::RuuviV5,
                Format::Atc1441,
                Format::Pvvx,
                Format::Mibeacon,
            ]
        }),
        min_interval: u.min_interval.unwrap_or(Duration::from_secs(60)),
        max_devices: u.max_devices,
    });
    let scanner = match &cfg.replay {
        Some(p) => {
            let path = if p.is_relative() {
                config
                    .file
                    .parent()
                    .map(|d| d.join(p))
                    .unwrap_or_else(|| p.clone())
            } else {
                p.clone()
            };
            ScannerSpec::Replay {
                path,
                interval: cfg.replay_interval.unwrap_or(Duration::from_millis(100)),
                looping: cfg.replay_loop,
            }
        }
        None => ScannerSpec::Bluez {
            adapter: cfg.adapter.clone(),
        },
    };
    let source = BleSource {
        bus: Arc::from(bus.name.as_str()),
        cfg,
        devices: specs,
        gatt: gatts,
        unknown,
        scanner: Some(scanner),
    };
    Ok((source, catalog))
}

async fn send_all(ctx: &SourceContext, evs: Vec<SourceEvent>) -> bool {
    for ev in evs {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return false,
            r = ctx.events.send(ev) => if r.is_err() { return false },
        }
    }
    true
}

impl Source for BleSource {
    fn name(&self) -> &str {
        &self.bus
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()> {
        async move {
            let bus = self.bus.clone();
            let spec = self.scanner.take().unwrap_or(ScannerSpec::Bluez { adapter: self.cfg.adapter.clone() });
            let mut scanner = match spec.into_scanner() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(bus = %bus, error = %e, "BLE is unavailable: the devices on this bus will not be published; other sources keep running");
                    if !send_all(&ctx, self.all_offline()).await {
                        return;
                    }
                    ctx.shutdown.cancelled().await;
                    return;
                }
            };
            // BlueZ may come up after us (boot order) or not exist at all: keep trying, quietly.
            let mut retry = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
            loop {
                let started = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    r = scanner.start() => r,
                };
                match started {
                    Ok(()) => break,
                    Err(e) => {
                        metrics::counter!("edgebus_ble_unavailable_total", "bus" => bus.to_string()).increment(1);
                        let wait = retry.next_delay();
                        if retry.failures == 1 {
                            tracing::error!(bus = %bus, error = %e, retry_in = ?wait, "BLE is unavailable: the devices on this bus will not be published until it is; other sources keep running");
                            // Say so on the devices' availability topics too.
                            if !send_all(&ctx, self.all_offline()).await {
                                return;
                            }
                        } else {
                            tracing::debug!(bus = %bus, error = %e, retry_in = ?wait, "BLE still unavailable");
                        }
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            if retry.failures > 0 {
                tracing::info!(bus = %bus, "BLE is available now");
            }
            let mut gatt_tasks = Vec::new();
            if !self.gatt.is_empty() {
                match scanner.gatt() {
                    Some(client) => {
                        for g in std::mem::take(&mut self.gatt) {
                            gatt_tasks.push(tokio::spawn(gatt::run_device(
                                g,
                                client.clone(),
                                ctx.events.clone(),
                                ctx.shutdown.child_token(),
                                Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
                            )));
                        }
                    }
                    None => tracing::warn!(bus = %bus, "this scanner has no GATT side (replay): GATT points are not read"),
                }
            }
            let now = tokio::time::Instant::now();
            let wd = Watchdog::new(self.cfg.watchdog.clone(), now);
            // Often enough for both the watchdog and the shortest offline timeout.
            let shortest = self.devices.iter().map(|d| d.offline_after).min().unwrap_or(Duration::MAX);
            let period = wd.check_period().min(shortest / 4).max(Duration::from_millis(100));
            let mut engine = Engine::new(bus.clone(), std::mem::take(&mut self.devices), self.unknown.take(), self.cfg.dedup_window, wd, now);
            tracing::info!(bus = %bus, devices = engine.device_count(), "BLE source running");
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ended = false;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    adv = scanner.next_advert(), if !ended => match adv {
                        Some(a) => {
                            let evs = engine.on_advert(&a, tokio::time::Instant::now(), SystemTime::now());
                            if !send_all(&ctx, evs).await {
                                break;
                            }
                        }
                        None => {
                            tracing::info!(bus = %bus, "advert source ended");
                            ended = true;
                        }
                    },
                    _ = tick.tick() => {
                        let (evs, action) = engine.on_tick(tokio::time::Instant::now());
                        if !send_all(&ctx, evs).await {
                            break;
                        }
                        let (what, r) = match action {
                            Action::None => continue,
                            Action::RestartDiscovery => ("restart_discovery", scanner.restart_discovery().await),
                            Action::ResetAdapter => ("reset_adapter", scanner.reset_adapter().await),
                        };
                        metrics::counter!("edgebus_ble_watchdog_recoveries_total", "bus" => bus.to_string(), "action" => what).increment(1);
                        match r {
                            Ok(()) => {
                                tracing::warn!(bus = %bus, action = what, silence = ?self.cfg.watchdog.silence, "scan watchdog: nothing heard; recovered scanning");
                                ended = false;
                            }
                            Err(e) => tracing::error!(bus = %bus, action = what, error = %e, "scan watchdog recovery failed"),
                        }
                    }
                }
            }
            for t in gatt_tasks {
                let _ = t.await;
            }
        }
        .boxed()
    }
}
