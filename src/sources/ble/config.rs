//! `type: ble` buses and the devices on them, as written in the device map.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::advert::Mac;
use super::decode::Format;
use super::gatt::ValueType;
use crate::config::{ConfigIssue, Path, Point, Secret, duration};

/// The bus: one Bluetooth adapter (or a replay file standing in for it).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BleBus {
    /// Adapter name (`hci0`); default: the first one BlueZ lists.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Read adverts from this file (lines `MAC RSSI HEX`) instead of the radio.
    #[serde(default)]
    pub replay: Option<PathBuf>,
    /// Pause between replayed lines (default 100 ms).
    #[serde(default, with = "duration::option")]
    pub replay_interval: Option<Duration>,
    /// Start the replay file again at its end (a demo that never runs dry).
    #[serde(default)]
    pub replay_loop: bool,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    /// Opt-in: publish devices that are not in the map, named by a keyed hash of their MAC.
    #[serde(default)]
    pub publish_unknown: Option<PublishUnknown>,
    /// Default for the devices on this bus: at most one set of readings per device this
    /// often (default 10 s); adverts arrive several times a second.
    #[serde(default, with = "duration::option")]
    pub min_interval: Option<Duration>,
    /// Default for the devices on this bus: not heard for this long means offline
    /// (default 10 min).
    #[serde(default, with = "duration::option")]
    pub offline_after: Option<Duration>,
    /// A repeated packet id is a duplicate only within this window, since the device may
    /// have restarted (default 4 s).
    #[serde(default, with = "duration::option")]
    pub dedup_window: Option<Duration>,
}

pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(600);
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(4);

/// Scan watchdog: BlueZ discovery is known to stop delivering adverts after hours or days.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// No advert from any mapped device for this long while some are expected: restart discovery.
    #[serde(default = "default_silence", with = "duration")]
    pub silence: Duration,
    /// After this many discovery restarts without an advert, power-cycle the adapter.
    #[serde(default = "default_reset_after")]
    pub reset_after: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            silence: default_silence(),
            reset_after: default_reset_after(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_silence() -> Duration {
    Duration::from_secs(300)
}
fn default_reset_after() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishUnknown {
    /// HMAC-SHA256 key (at least 16 characters). Keep it secret: with the key, a MAC can be
    /// checked against a hash.
    pub hash_key: Secret,
    /// Device name prefix for unknown devices (`ble-` gives `ble-3f9a1c…`).
    #[serde(default = "default_unknown_prefix")]
    pub prefix: String,
    /// Only adverts of these formats (default: sensor formats, not presence beacons).
    #[serde(default)]
    pub formats: Option<Vec<Format>>,
    #[serde(default, with = "duration::option")]
    pub min_interval: Option<Duration>,
    /// At most this many unknown devices are tracked (memory bound).
    #[serde(default = "default_max_unknown")]
    pub max_devices: usize,
}

fn default_unknown_prefix() -> String {
    "ble-".into()
}
fn default_max_unknown() -> usize {
    256
}

/// How to read a device's adverts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderChoice {
    #[default]
    Auto,
    Bthome,
    RuuviV5,
    Atc1441,
    Pvvx,
    Mibeacon,
    Ibeacon,
    Eddystone,
    /// Connected device only: no advert decoding (GATT points only).
    None,
}

impl DecoderChoice {
    pub fn format(self) -> Option<Format> {
        Some(match self {
            DecoderChoice::Bthome => Format::Bthome,
            DecoderChoice::RuuviV5 => Format::RuuviV5,
            DecoderChoice::Atc1441 => Format::Atc1441,
            DecoderChoice::Pvvx => Format::Pvvx,
            DecoderChoice::Mibeacon => Format::Mibeacon,
            DecoderChoice::Ibeacon => Format::Ibeacon,
            DecoderChoice::Eddystone => Format::Eddystone,
            DecoderChoice::Auto | DecoderChoice::None => return None,
        })
    }
}

/// A device on a `ble` bus (fields after the shared header).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BleDevice {
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Advertised local name (exact match), for devices with changing MACs.
    #[serde(default)]
    pub local_name: Option<String>,
    #[serde(default)]
    pub decoder: DecoderChoice,
    /// AES key, 32 hex characters (24 for MiBeacon v2/v3).
    #[serde(default)]
    pub bind_key: Option<Secret>,
    #[serde(default, with = "duration::option")]
    pub min_interval: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub offline_after: Option<Duration>,
    /// Publish the received signal strength as point `rssi`.
    #[serde(default = "yes")]
    pub rssi: bool,
    /// Which decoded values to publish, renamed and scaled (default: all).
    #[serde(default)]
    pub points: Option<Vec<Point<AdvertPoint>>>,
    /// Values read from a connection (GATT), polled or notified.
    #[serde(default)]
    pub gatt: Vec<Point<GattPoint>>,
}

/// A decoded advert value published as a point.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdvertPoint {
    /// Decoder's name for the value (default: the point name).
    #[serde(default)]
    pub from: Option<String>,
}

/// A characteristic read over a connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GattPoint {
    /// Service UUID: 16-bit (`180f`) or full.
    pub service: String,
    pub characteristic: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Byte position of the value in the characteristic.
    #[serde(default)]
    pub at: usize,
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Subscribe to notifications instead of polling.
    #[serde(default)]
    pub notify: bool,
    /// Poll period (default: the device's `poll`, else 60 s).
    #[serde(default, with = "duration::option")]
    pub poll: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// GATT's own order.
    #[default]
    Little,
    Big,
}

/// Parses `180f` or `0000180f-0000-1000-8000-00805f9b34fb`.
pub fn parse_uuid(s: &str) -> Option<u128> {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    match h.len() {
        4 => u16::from_str_radix(&h, 16).ok().map(super::advert::uuid16),
        8 => u32::from_str_radix(&h, 16)
            .ok()
            .map(|u| ((u as u128) << 96) | (super::advert::uuid16(0) & ((1u128 << 96) - 1))),
        32 => u128::from_str_radix(&h, 16).ok(),
        _ => None,
    }
}

/// Parses a hex bind key; the length is checked against the decoder by `validate`.
pub fn parse_key(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.trim())
        .ok()
        .filter(|k| k.len() == 16 || k.len() == 12)
}

impl BleBus {
    pub fn validate(&self, path: &Path) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if let Some(u) = &self.publish_unknown {
            if u.hash_key.expose().len() < 16 {
                out.push(ConfigIssue::new(
                    path.key("publish_unknown").key("hash_key"),
                    "hash_key must be at least 16 characters (a short key makes MAC hashes guessable)",
                ));
            }
            if !crate::format::is_topic_level(&format!("{}x", u.prefix)) {
                out.push(ConfigIssue::new(
                    path.key("publish_unknown").key("prefix"),
                    "prefix cannot be used in topics",
                ));
            }
            if u.max_devices == 0 || u.max_devices > 10_000 {
                out.push(ConfigIssue::new(
                    path.key("publish_unknown").key("max_devices"),
                    "max_devices must be 1..=10000",
                ));
            }
        }
        if self.watchdog.silence < Duration::from_secs(10) {
            out.push(ConfigIssue::new(
                path.key("watchdog").key("silence"),
                "silence below 10s would restart discovery constantly",
            ));
        }
        out
    }
}

impl BleDevice {
    /// Semantic checks; paths are relative to the device.
    pub fn validate(&self, path: &Path) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if self.mac.is_none() && self.local_name.is_none() {
            out.push(ConfigIssue::new(
                path.clone(),
                "a ble device needs `mac` and/or `local_name`",
            ));
        }
        if let Some(k) = &self.bind_key {
            match hex::decode(k.expose().trim()) {
                Ok(b) if b.len() == 16 => {}
                Ok(b) if b.len() == 12 && matches!(self.decoder, DecoderChoice::Mibeacon | DecoderChoice::Auto) => {}
                Ok(b) => out.push(ConfigIssue::new(
                    path.key("bind_key"),
                    format!("bind_key has {} bytes; expected 16 (32 hex characters), or 12 for MiBeacon v2/v3", b.len()),
                )),
                Err(_) => out.push(ConfigIssue::new(path.key("bind_key"), "bind_key must be hexadecimal")),
            }
        }
        if self.decoder == DecoderChoice::None && self.gatt.is_empty() {
            out.push(ConfigIssue::new(
                path.key("decoder"),
                "decoder `none` publishes nothing without `gatt` points",
            ));
        }
        for (i, g) in self.gatt.iter().enumerate() {
            let p = path.key("gatt").index(i);
            if parse_uuid(&g.kind.service).is_none() {
                out.push(ConfigIssue::new(
                    p.key("service"),
                    "expected a 16-bit (180f) or 128-bit UUID",
                ));
            }
            if parse_uuid(&g.kind.characteristic).is_none() {
                out.push(ConfigIssue::new(
                    p.key("characteristic"),
                    "expected a 16-bit (2a19) or 128-bit UUID",
                ));
            }
            if g.kind.at > 512 {
                out.push(ConfigIssue::new(
                    p.key("at"),
                    "a characteristic value has at most 512 bytes",
                ));
            }
            if g.kind.notify && g.kind.poll.is_some() {
                out.push(ConfigIssue::new(
                    p.key("poll"),
                    "give either `notify: true` or `poll`, not both",
                ));
            }
            if g.kind.poll.is_some_and(|d| d < Duration::from_secs(1)) {
                out.push(ConfigIssue::new(
                    p.key("poll"),
                    "poll below 1s keeps the radio busy; use notify",
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn device_parses_and_validates() {
        let v = serde_json::json!({
            "mac": "A4:C1:38:8D:18:B2", "decoder": "pvvx", "min_interval": "30s",
            "points": [{"name": "temp", "from": "temperature", "deadband": 0.1}],
            "gatt": [{"name": "battery", "service": "180f", "characteristic": "2a19", "type": "u8", "poll": "1h"}]
        });
        let d: BleDevice = parse(&v, &Path::root()).unwrap();
        assert_eq!(d.decoder, DecoderChoice::Pvvx);
        assert_eq!(d.min_interval, Some(Duration::from_secs(30)));
        assert!(d.rssi);
        assert!(d.validate(&Path::root()).is_empty());
        assert_eq!(
            d.points.as_ref().unwrap()[0].kind.from.as_deref(),
            Some("temperature")
        );
    }

    #[test]
    fn device_problems_are_reported() {
        let v = serde_json::json!({"bind_key": "abcd", "decoder": "none",
            "gatt": [{"name": "x", "service": "zz", "characteristic": "2a19", "type": "u8", "notify": true, "poll": "5s"}]});
        let d: BleDevice = parse(&v, &Path::root().key("devices").index(0)).unwrap();
        let issues: Vec<String> = d
            .validate(&Path::root().key("devices").index(0))
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert!(
            issues.iter().any(|i| i.contains("needs `mac`")),
            "{issues:?}"
        );
        assert!(
            issues.iter().any(|i| i.contains("bind_key has 2 bytes")),
            "{issues:?}"
        );
        assert!(
            issues.iter().any(|i| i.contains("gatt[0].service")),
            "{issues:?}"
        );
        assert!(issues.iter().any(|i| i.contains("not both")), "{issues:?}");
        let bad = serde_json::json!({"mac": "xx", "decoder": "ruuvi"});
        assert!(parse::<BleDevice>(&bad, &Path::root()).is_err());
    }

    #[test]
    fn bus_defaults_and_checks() {
        let b: BleBus = parse(&serde_json::json!({}), &Path::root()).unwrap();
        assert!(b.watchdog.enabled);
        assert_eq!(b.watchdog.silence, Duration::from_secs(300));
        let b: BleBus = parse(&serde_json::json!({"publish_unknown": {"hash_key": "short"}, "watchdog": {"silence": "1s"}}), &Path::root()).unwrap();
        assert_eq!(b.validate(&Path::root()).len(), 2);
    }

    #[test]
    fn uuids() {
        assert_eq!(
            parse_uuid("180f"),
            Some(super::super::advert::uuid16(0x180f))
        );
        assert_eq!(
            parse_uuid("0000180f-0000-1000-8000-00805f9b34fb"),
            Some(super::super::advert::uuid16(0x180f))
        );
        assert_eq!(
            parse_uuid("6e400001-b5a3-f393-e0a9-e50e24dcca9e"),
            Some(0x6e400001_b5a3_f393_e0a9_e50e24dcca9e)
        );
        assert_eq!(parse_uuid("18"), None);
    }
}
