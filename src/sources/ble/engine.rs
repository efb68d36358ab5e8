//! The advert half of the source without I/O: adverts and clock ticks in, events and
//! watchdog actions out. Device matching, decoding with bind keys, replay protection,
//! packet-id de-duplication, minimum publish interval, privacy and offline detection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::time::Instant;

use super::advert::{Advert, Mac};
use super::config::{DEFAULT_DEDUP_WINDOW, DecoderChoice};
use super::decode::bthome::PacketIdFilter;
use super::decode::{self, DecodeError, Format, Measurement};
use super::watchdog::{Action, Watchdog};
use crate::config::PointCommon;
use crate::reading::{Reading, Value};
use crate::sources::SourceEvent;

/// A mapped device, ready to run.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: Arc<str>,
    pub mac: Option<Mac>,
    pub local_name: Option<String>,
    pub decoder: DecoderChoice,
    pub key: Option<Vec<u8>>,
    pub min_interval: Duration,
    pub offline_after: Duration,
    pub rssi: bool,
    /// (decoder value name, point) when the map selects points; `None` publishes all.
    pub points: Option<Vec<(String, PointCommon)>>,
}

/// Opt-in publishing of devices that are not in the map.
#[derive(Debug, Clone)]
pub struct UnknownSpec {
    pub hash_key: Vec<u8>,
    pub prefix: String,
    pub formats: Vec<Format>,
    pub min_interval: Duration,
    pub max_devices: usize,
}

#[derive(Debug)]
struct DeviceState {
    spec: DeviceSpec,
    last_seen: Instant,
    online: Option<bool>,
    last_publish: Option<Instant>,
    dedup: PacketIdFilter,
    last_counter: Option<u32>,
    warned: HashSet<&'static str>,
}

#[derive(Debug)]
struct UnknownState {
    name: Arc<str>,
    last_seen: Instant,
    last_publish: Option<Instant>,
    dedup: PacketIdFilter,
}

pub struct Engine {
    bus: Arc<str>,
    devices: Vec<DeviceState>,
    by_mac: HashMap<Mac, usize>,
    by_name: HashMap<String, usize>,
    unknown: Option<UnknownSpec>,
    unknown_state: HashMap<Mac, UnknownState>,
    dedup_window: Duration,
    pub watchdog: Watchdog,
}

/// Keyed hash of a MAC: stable per key, not reversible without it.
pub fn hashed_name(key: &[u8], prefix: &str, mac: Mac) -> String {
    let Ok(mut h) = Hmac::<Sha256>::new_from_slice(key) else {
        return format!("{prefix}unknown");
    };
    h.update(&mac.0);
    let out = h.finalize().into_bytes();
    format!("{prefix}{}", hex::encode(&out[..8]))
}

fn reason(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::TooShort(_) => "too_short",
        DecodeError::NotThisFormat => "wrong_format",
        DecodeError::Unsupported(_) => "unsupported",
        DecodeError::NoKey => "no_key",
        DecodeError::BadKeyLength(_) => "bad_key",
        DecodeError::Decrypt => "decrypt",
        DecodeError::NoMac => "no_mac",
    }
}

impl Engine {
    pub fn new(
        bus: Arc<str>,
        devices: Vec<DeviceSpec>,
        unknown: Option<UnknownSpec>,
        dedup_window: Option<Duration>,
        watchdog: Watchdog,
        now: Instant,
    ) -> Engine {
        let mut by_mac = HashMap::new();
        let mut by_name = HashMap::new();
        let devices: Vec<DeviceState> = devices
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                if let Some(m) = spec.mac {
                    by_mac.insert(m, i);
                }
                if let Some(n) = &spec.local_name {
                    by_name.insert(n.clone(), i);
                }
                DeviceState {
                    spec,
                    last_seen: now,
                    online: None,
                    last_publish: None,
                    dedup: PacketIdFilter::default(),
                    last_counter: None,
                    warned: HashSet::new(),
                }
            })
            .collect();
        Engine {
            bus,
            devices,
            by_mac,
            by_name,
            unknown,
            unknown_state: HashMap::new(),
            dedup_window: dedup_window.unwrap_or(DEFAULT_DEDUP_WINDOW),
            watchdog,
        }
    }

    fn lookup(&self, adv: &Advert) -> Option<usize> {
        if let Some(i) = adv.mac.and_then(|m| self.by_mac.get(&m)) {
            return Some(*i);
        }
        let i = *adv.name.as_ref().and_then(|n| self.by_name.get(n))?;
        // A device mapped by MAC *and* name must match both.
        match self.devices[i].spec.mac {
            Some(m) if Some(m) != adv.mac => None,
            _ => Some(i),
        }
    }

    /// Handles one advert received at `now` (`ts` for the readings).
    pub fn on_advert(&mut self, adv: &Advert, now: Instant, ts: SystemTime) -> Vec<SourceEvent> {
        self.watchdog.heard(now);
        metrics::counter!("edgebus_ble_adverts_total", "bus" => self.bus.to_string()).increment(1);
        match self.lookup(adv) {
            Some(i) => self.on_known(i, adv, now, ts),
            None => self.on_unknown(adv, now, ts),
        }
    }

    fn on_known(
        &mut self,
        i: usize,
        adv: &Advert,
        now: Instant,
        ts: SystemTime,
    ) -> Vec<SourceEvent> {
        let window = self.dedup_window;
        let d = &mut self.devices[i];
        let dev = d.spec.name.clone();
        let mut out = Vec::new();
        d.last_seen = now;
        if d.spec.decoder == DecoderChoice::None {
            // Connected-only device: its GATT task owns availability.
            return out;
        }
        if d.online != Some(true) {
            d.online = Some(true);
            tracing::info!(device = %dev, "BLE device heard: online");
            out.push(SourceEvent::Availability {
                device: dev.clone(),
                online: true,
            });
        }
        let format = match d.spec.decoder.format().or_else(|| decode::detect(adv)) {
            Some(f) => f,
            None => {
                warn_once(
                    d,
                    "no_format",
                    "advert in no known format (set `decoder:` or check the MAC)",
                );
                return out;
            }
        };
        let decoded = match decode::decode_with(format, adv, d.spec.key.as_deref()) {
            Ok(x) => x,
            Err(DecodeError::NotThisFormat) => return out, // e.g. a scan response without the payload
            Err(e) => {
                metrics::counter!("edgebus_ble_decode_errors_total", "device" => dev.to_string(), "reason" => reason(&e)).increment(1);
                warn_once(
                    d,
                    reason(&e),
                    &format!("cannot decode {format} advert: {e}"),
                );
                return out;
            }
        };
        if d.spec.key.is_some()
            && !decoded.encrypted
            && matches!(format, Format::Bthome | Format::Mibeacon)
            && !decoded.measurements.is_empty()
        {
            // With a bind key, plaintext data could be forged by anyone nearby.
            metrics::counter!("edgebus_ble_rejected_total", "device" => dev.to_string(), "reason" => "plaintext").increment(1);
            warn_once(
                d,
                "plaintext",
                "unencrypted advert from a device with a bind key: ignored",
            );
            return out;
        }
        if let Some(c) = decoded.counter {
            if let Some(last) = d.last_counter {
                if c == last {
                    metrics::counter!("edgebus_ble_duplicates_total", "device" => dev.to_string())
                        .increment(1);
                    return out;
                }
                // Smaller counter: a replayed frame, unless the device restarted from ~0.
                if c < last && last - c < u32::MAX / 2 && c >= 100 {
                    metrics::counter!("edgebus_ble_rejected_total", "device" => dev.to_string(), "reason" => "replay").increment(1);
                    warn_once(
                        d,
                        "replay",
                        &format!(
                            "encryption counter went back ({last} -> {c}): possible replay, ignored"
                        ),
                    );
                    return out;
                }
            }
            d.last_counter = Some(c);
        }
        if let Some(pid) = decoded.packet_id {
            let modulo = if format == Format::RuuviV5 {
                65_536
            } else {
                256
            };
            if !d.dedup.accept(pid, modulo, now.into_std(), window) {
                metrics::counter!("edgebus_ble_duplicates_total", "device" => dev.to_string())
                    .increment(1);
                return out;
            }
        }
        if decoded.measurements.is_empty() {
            return out;
        }
        if let Some(last) = d.last_publish
            && now.saturating_duration_since(last) < d.spec.min_interval
        {
            metrics::counter!("edgebus_ble_throttled_total", "device" => dev.to_string())
                .increment(1);
            return out;
        }
        d.last_publish = Some(now);
        for m in decoded.measurements {
            if let Some(r) = reading_for(&dev, d.spec.points.as_deref(), m, ts) {
                out.push(SourceEvent::Reading(r));
            }
        }
        if d.spec.rssi
            && let Some(r) = adv.rssi
        {
            out.push(SourceEvent::Reading(
                Reading::new(dev.clone(), "rssi", Value::Int(i64::from(r)))
                    .with_unit(Some(Arc::from("dBm")))
                    .with_ts(ts),
            ));
        }
        out
    }

    fn on_unknown(&mut self, adv: &Advert, now: Instant, ts: SystemTime) -> Vec<SourceEvent> {
        let (Some(u), Some(mac)) = (&self.unknown, adv.mac) else {
            return Vec::new();
        };
        let Some(format) = decode::detect(adv).filter(|f| u.formats.contains(f)) else {
            return Vec::new();
        };
        let Ok(decoded) = decode::decode_with(format, adv, None) else {
            return Vec::new();
        };
        if decoded.measurements.is_empty() {
            return Vec::new();
        }
        if !self.unknown_state.contains_key(&mac) {
            if self.unknown_state.len() >= u.max_devices {
                metrics::counter!("edgebus_ble_unknown_dropped_total", "bus" => self.bus.to_string()).increment(1);
                return Vec::new();
            }
            let name: Arc<str> = Arc::from(hashed_name(&u.hash_key, &u.prefix, mac));
            tracing::info!(bus = %self.bus, device = %name, format = %format, "publishing an unmapped BLE device under a hashed name");
            self.unknown_state.insert(
                mac,
                UnknownState {
                    name,
                    last_seen: now,
                    last_publish: None,
                    dedup: PacketIdFilter::default(),
                },
            );
        }
        let window = self.dedup_window;
        let Some(st) = self.unknown_state.get_mut(&mac) else {
            return Vec::new();
        };
        st.last_seen = now;
        if let Some(pid) = decoded.packet_id {
            let modulo = if format == Format::RuuviV5 {
                65_536
            } else {
                256
            };
            if !st.dedup.accept(pid, modulo, now.into_std(), window) {
                return Vec::new();
            }
        }
        if st
            .last_publish
            .is_some_and(|l| now.saturating_duration_since(l) < u.min_interval)
        {
            return Vec::new();
        }
        st.last_publish = Some(now);
        let dev = st.name.clone();
        let mut out: Vec<SourceEvent> = decoded
            .measurements
            .into_iter()
            // the MAC inside some payloads would undo the hashing
            .filter(|m| m.name != "mac")
            .filter_map(|m| reading_for(&dev, None, m, ts))
            .map(SourceEvent::Reading)
            .collect();
        if let Some(r) = adv.rssi {
            out.push(SourceEvent::Reading(
                Reading::new(dev, "rssi", Value::Int(i64::from(r)))
                    .with_unit(Some(Arc::from("dBm")))
                    .with_ts(ts),
            ));
        }
        out
    }

    /// Periodic housekeeping: offline detection and the scan watchdog.
    pub fn on_tick(&mut self, now: Instant) -> (Vec<SourceEvent>, Action) {
        let mut out = Vec::new();
        for d in self
            .devices
            .iter_mut()
            .filter(|d| d.spec.decoder != DecoderChoice::None)
        {
            if d.online != Some(false)
                && now.saturating_duration_since(d.last_seen) >= d.spec.offline_after
            {
                d.online = Some(false);
                tracing::warn!(device = %d.spec.name, silent_for = ?d.spec.offline_after, "BLE device not heard: offline");
                out.push(SourceEvent::Availability {
                    device: d.spec.name.clone(),
                    online: false,
                });
            }
        }
        if let Some(u) = &self.unknown {
            let keep = u.min_interval.max(Duration::from_secs(3600));
            self.unknown_state
                .retain(|_, s| now.saturating_duration_since(s.last_seen) < keep);
        }
        let expecting = self
            .devices
            .iter()
            .any(|d| d.spec.decoder != DecoderChoice::None);
        (out, self.watchdog.tick(now, expecting))
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
}

fn warn_once(d: &mut DeviceState, kind: &'static str, msg: &str) {
    if d.warned.insert(kind) {
        tracing::warn!(device = %d.spec.name, "{msg} (further ones logged at debug)");
    } else {
        tracing::debug!(device = %d.spec.name, "{msg}");
    }
}

/// One decoded value as a reading, through the device's point selection and scaling.
fn reading_for(
    dev: &Arc<str>,
    points: Option<&[(String, PointCommon)]>,
    m: Measurement,
    ts: SystemTime,
) -> Option<Reading> {
    let (name, unit, value) = match points {
        None => (Arc::from(m.name.as_ref()), m.unit.map(Arc::from), m.value),
        Some(ps) => {
            let (_, p) = ps.iter().find(|(from, _)| *from == m.name)?;
            let value = match (&m.value, p.has_scaling()) {
                (v, true) => match v.as_f64() {
                    Some(x) if !matches!(v, Value::Bool(_)) => Value::Float(p.apply_scale(x)),
                    _ => m.value,
                },
                _ => m.value,
            };
            let unit = p.unit.as_deref().map(Arc::from).or(m.unit.map(Arc::from));
            (Arc::from(p.name.as_str()), unit, value)
        }
    };
    Some(
        Reading::new(dev.clone(), name, value)
            .with_unit(unit)
            .with_ts(ts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ble::config::WatchdogConfig;

    const ATC_MAC: &str = "A4:C1:38:8D:18:B2";

    fn adv(mac: &str, rssi: i16, hex_ad: &str) -> Advert {
        Advert::parse(
            Some(mac.parse().unwrap()),
            Some(rssi),
            &hex::decode(hex_ad).unwrap(),
        )
        .unwrap()
        .0
    }
    /// BTHome v2 plain advert with the given packet id and temperature (0.01 °C).
    fn bthome(pid: u8, temp: i16) -> String {
        let t = temp.to_le_bytes();
        format!("0201060b16d2fc4000{pid:02x}02{:02x}{:02x}0164", t[0], t[1])
    }
    fn spec(name: &str, mac: &str) -> DeviceSpec {
        DeviceSpec {
            name: Arc::from(name),
            mac: Some(mac.parse().unwrap()),
            local_name: None,
            decoder: DecoderChoice::Auto,
            key: None,
            min_interval: Duration::from_secs(10),
            offline_after: Duration::from_secs(60),
            rssi: true,
            points: None,
        }
    }
    fn engine(devs: Vec<DeviceSpec>, unknown: Option<UnknownSpec>, t0: Instant) -> Engine {
        Engine::new(
            Arc::from("ble"),
            devs,
            unknown,
            None,
            Watchdog::new(WatchdogConfig::default(), t0),
            t0,
        )
    }
    fn readings(evs: &[SourceEvent]) -> Vec<(String, String, Value)> {
        evs.iter()
            .filter_map(|e| match e {
                SourceEvent::Reading(r) => {
                    Some((r.device.to_string(), r.point.to_string(), r.value.clone()))
                }
                _ => None,
            })
            .collect()
    }
    fn availability(evs: &[SourceEvent]) -> Vec<(String, bool)> {
        evs.iter()
            .filter_map(|e| match e {
                SourceEvent::Availability { device, online } => Some((device.to_string(), *online)),
                _ => None,
            })
            .collect()
    }
    fn s(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn publishes_known_device_with_rssi_and_goes_online() {
        let t0 = Instant::now();
        let mut e = engine(vec![spec("living", ATC_MAC)], None, t0);
        let evs = e.on_advert(&adv(ATC_MAC, -61, &bthome(1, 2150)), t0, SystemTime::now());
        assert_eq!(availability(&evs), vec![("living".into(), true)]);
        let r = readings(&evs);
        assert!(
            r.contains(&("living".into(), "temperature".into(), Value::Float(21.5))),
            "{r:?}"
        );
        assert!(r.contains(&("living".into(), "battery".into(), Value::UInt(100))));
        assert!(r.contains(&("living".into(), "rssi".into(), Value::Int(-61))));
        assert!(r.contains(&("living".into(), "packet_id".into(), Value::UInt(1))));
    }

    #[test]
    fn duplicates_are_dropped_by_packet_id() {
        let t0 = Instant::now();
        let mut d = spec("living", ATC_MAC);
        d.min_interval = Duration::ZERO;
        let mut e = engine(vec![d], None, t0);
        let ts = SystemTime::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut at = |pid: u8, t: Instant| {
            !readings(&e.on_advert(&adv(ATC_MAC, -60, &bthome(pid, 2000)), t, ts)).is_empty()
        };
        assert!(at(7, ms(0)));
        assert!(!at(7, ms(300)), "the same frame re-sent");
        assert!(!at(5, ms(1000)), "an older frame (re-ordered by a proxy)");
        assert!(at(8, ms(1500)));
        assert!(
            at(8, ms(10_000)),
            "after the window the same id means the device restarted"
        );
    }

    #[test]
    fn min_interval_holds_back_new_frames() {
        let t0 = Instant::now();
        let mut e = engine(vec![spec("living", ATC_MAC)], None, t0);
        let ts = SystemTime::now();
        assert!(!readings(&e.on_advert(&adv(ATC_MAC, -60, &bthome(7, 2000)), t0, ts)).is_empty());
        assert!(
            readings(&e.on_advert(&adv(ATC_MAC, -60, &bthome(8, 2010)), s(t0, 2), ts)).is_empty()
        );
        assert!(
            readings(&e.on_advert(&adv(ATC_MAC, -60, &bthome(9, 2015)), s(t0, 9), ts)).is_empty()
        );
        let r = readings(&e.on_advert(&adv(ATC_MAC, -60, &bthome(10, 2020)), s(t0, 10), ts));
        assert!(
            r.contains(&("living".into(), "temperature".into(), Value::Float(20.2))),
            "{r:?}"
        );
    }

    #[test]
    fn unknown_devices_are_private_unless_opted_in() {
        let t0 = Instant::now();
        let ts = SystemTime::now();
        let stranger = "11:22:33:44:55:66";
        let mut e = engine(vec![spec("living", ATC_MAC)], None, t0);
        assert!(
            e.on_advert(&adv(stranger, -70, &bthome(1, 100)), t0, ts)
                .is_empty()
        );
        let key = b"0123456789abcdef0123".to_vec();
        let u = UnknownSpec {
            hash_key: key.clone(),
            prefix: "ble-".into(),
            formats: vec![Format::Bthome, Format::RuuviV5],
            min_interval: Duration::from_secs(60),
            max_devices: 1,
        };
        let mut e = engine(vec![], Some(u), t0);
        let evs = e.on_advert(&adv(stranger, -70, &bthome(1, 100)), t0, ts);
        let name = hashed_name(&key, "ble-", stranger.parse().unwrap());
        assert_eq!(name.len(), 4 + 16);
        assert!(!name.contains("112233"));
        let r = readings(&evs);
        assert!(
            !r.is_empty() && r.iter().all(|(d, _, _)| *d == name),
            "{r:?}"
        );
        assert!(
            availability(&evs).is_empty(),
            "no availability for unmapped devices"
        );
        // Ruuvi carries its MAC in the payload: that value must not be published
        let ruuvi = "0201061bff99040512fc5394c37c0004fffc040cac364200cdcbb8334c884f";
        let mut e2 = engine(
            vec![],
            Some(UnknownSpec {
                max_devices: 5,
                ..e.unknown.clone().unwrap()
            }),
            t0,
        );
        let r = readings(&e2.on_advert(&adv("CB:B8:33:4C:88:4F", -80, ruuvi), t0, ts));
        assert!(r.iter().any(|(_, p, _)| p == "temperature"));
        assert!(
            !r.iter()
                .any(|(_, p, v)| p == "mac" || v.to_string().contains("CB:B8")),
            "{r:?}"
        );
        // bounded: a second stranger is dropped when max_devices is 1
        assert!(
            e.on_advert(&adv("11:22:33:44:55:77", -70, &bthome(1, 100)), t0, ts)
                .is_empty()
        );
        // a different key gives a different name
        assert_ne!(
            hashed_name(b"another key 123456", "ble-", stranger.parse().unwrap()),
            name
        );
    }

    #[test]
    fn offline_after_silence_then_online_again() {
        let t0 = Instant::now();
        let ts = SystemTime::now();
        let mut e = engine(
            vec![spec("living", ATC_MAC), spec("never", "01:02:03:04:05:06")],
            None,
            t0,
        );
        e.on_advert(&adv(ATC_MAC, -60, &bthome(1, 2000)), s(t0, 30), ts);
        let (evs, _) = e.on_tick(s(t0, 60));
        assert_eq!(
            availability(&evs),
            vec![("never".into(), false)],
            "never heard: offline after 60 s"
        );
        let (evs, _) = e.on_tick(s(t0, 89));
        assert!(evs.is_empty());
        let (evs, _) = e.on_tick(s(t0, 90));
        assert_eq!(availability(&evs), vec![("living".into(), false)]);
        let (evs, _) = e.on_tick(s(t0, 200));
        assert!(evs.is_empty(), "offline is reported once");
        let evs = e.on_advert(&adv(ATC_MAC, -60, &bthome(2, 2000)), s(t0, 201), ts);
        assert_eq!(availability(&evs), vec![("living".into(), true)]);
    }

    #[test]
    fn bind_key_devices_reject_plaintext_and_replays() {
        let t0 = Instant::now();
        let ts = SystemTime::now();
        let mac = "54:48:E6:8F:80:A5";
        let mut d = spec("sbht", mac);
        d.key = Some(hex::decode("231d39c1d7cc1ab1aee224cd096db932").unwrap());
        d.min_interval = Duration::ZERO;
        let mut e = engine(vec![d], None, t0);
        // plaintext from a keyed device: forged or misconfigured, ignored
        assert!(readings(&e.on_advert(&adv(mac, -60, &bthome(1, 2000)), t0, ts)).is_empty());
        let enc = "0201061216d2fc41a47266c95f730011223378237214"; // counter 0x33221100
        let r = readings(&e.on_advert(&adv(mac, -60, enc), s(t0, 1), ts));
        assert!(
            r.contains(&("sbht".into(), "temperature".into(), Value::Float(25.06))),
            "{r:?}"
        );
        // the same encrypted frame again (a replay or a repeat): not published twice
        assert!(readings(&e.on_advert(&adv(mac, -60, enc), s(t0, 100), ts)).is_empty());
        // wrong key: nothing
        let mut d = spec("sbht", mac);
        d.key = Some(vec![0u8; 16]);
        let mut e = engine(vec![d], None, t0);
        assert!(readings(&e.on_advert(&adv(mac, -60, enc), t0, ts)).is_empty());
    }

    #[test]
    fn point_selection_renames_and_scales() {
        let t0 = Instant::now();
        let mut d = spec("living", ATC_MAC);
        d.rssi = false;
        d.points = Some(vec![(
            "temperature".into(),
            PointCommon {
                name: "temp_f".into(),
                unit: Some("°F".into()),
                scale: Some(1.8),
                offset: Some(32.0),
                ..Default::default()
            },
        )]);
        let mut e = engine(vec![d], None, t0);
        let evs = e.on_advert(&adv(ATC_MAC, -60, &bthome(1, 2000)), t0, SystemTime::now());
        let r: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Reading(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(&*r[0].point, "temp_f");
        assert_eq!(r[0].value, Value::Float(68.0));
        assert_eq!(r[0].unit.as_deref(), Some("°F"));
    }

    #[test]
    fn connected_only_devices_leave_availability_to_gatt() {
        let t0 = Instant::now();
        let mut d = spec("tracker", ATC_MAC);
        d.decoder = DecoderChoice::None;
        let mut e = engine(vec![d], None, t0);
        assert!(
            e.on_advert(&adv(ATC_MAC, -60, &bthome(1, 2000)), t0, SystemTime::now())
                .is_empty()
        );
        let (evs, act) = e.on_tick(s(t0, 10_000));
        assert!(evs.is_empty());
        assert_eq!(act, Action::None, "no advert is expected from it either");
    }

    #[test]
    fn local_name_matching_and_watchdog_expectation() {
        let t0 = Instant::now();
        let mut d = spec("by-name", ATC_MAC);
        d.mac = None;
        d.local_name = Some("ATC_8D18B2".into());
        let mut e = engine(vec![d], None, t0);
        let mut a = adv("DE:AD:BE:EF:00:01", -60, &bthome(1, 2000));
        a.name = Some("ATC_8D18B2".into());
        assert!(!readings(&e.on_advert(&a, t0, SystemTime::now())).is_empty());
        // the watchdog: silence while a device is expected
        let (_, act) = e.on_tick(s(t0, 299));
        assert_eq!(act, Action::None);
        let (_, act) = e.on_tick(s(t0, 300));
        assert_eq!(act, Action::RestartDiscovery);
        assert_eq!(e.watchdog.discovery_restarts, 1);
        // no devices mapped: nothing is expected, no recovery
        let mut none = engine(vec![], None, t0);
        assert_eq!(none.on_tick(s(t0, 10_000)).1, Action::None);
    }
}
