//! The parts of devices and points that every kind of source shares: names, publishing
//! options and filters. A source module owns the rest of its device and point mappings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::issue::nested_error;
use crate::message::QoS;

/// Keys of a point mapping that the core understands, whatever the source.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointCommon {
    pub name: String,
    #[serde(default)]
    pub unit: Option<String>,
    /// value = raw * scale + offset
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// Publish only when the value moved by more than this (absolute).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Publish only when the value changed (default: every reading).
    #[serde(default)]
    pub on_change: Option<bool>,
    /// With a filter, publish at least this often even without change.
    #[serde(default, with = "super::units::duration::option")]
    pub heartbeat: Option<Duration>,
    #[serde(default)]
    pub qos: Option<QoS>,
    #[serde(default)]
    pub retain: Option<bool>,
    /// Topic template for this point only.
    #[serde(default)]
    pub topic: Option<String>,
    /// Accept `…/set` writes for this point.
    #[serde(default)]
    pub writable: bool,
    /// Extra static fields added to this point's JSON payloads.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl PointCommon {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "unit",
        "scale",
        "offset",
        "deadband",
        "on_change",
        "heartbeat",
        "qos",
        "retain",
        "topic",
        "writable",
        "tags",
    ];

    /// Engineering value from a raw number.
    pub fn apply_scale(&self, raw: f64) -> f64 {
        raw * self.scale.unwrap_or(1.0) + self.offset.unwrap_or(0.0)
    }

    /// Raw number from an engineering value (for writes).
    pub fn unapply_scale(&self, v: f64) -> f64 {
        let scale = self.scale.unwrap_or(1.0);
        let scale = if scale == 0.0 { 1.0 } else { scale };
        (v - self.offset.unwrap_or(0.0)) / scale
    }

    pub fn has_scaling(&self) -> bool {
        self.scale.is_some() || self.offset.is_some()
    }
}

/// A point: the shared keys plus the source's own (`K`), written as one YAML mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<K> {
    pub common: PointCommon,
    pub kind: K,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Point<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (common, kind) = split_mapping::<PointCommon, K, D::Error>(
            serde_json::Map::deserialize(d)?,
            PointCommon::FIELDS,
        )?;
        Ok(Point { common, kind })
    }
}

/// Splits one mapping into the keys `A` knows and the rest for `B`. Used instead of
/// `#[serde(flatten)]`, which cannot be combined with `deny_unknown_fields`.
pub fn split_mapping<A: DeserializeOwned, B: DeserializeOwned, E: serde::de::Error>(
    map: serde_json::Map<String, serde_json::Value>,
    a_fields: &[&str],
) -> Result<(A, B), E> {
    let (a_map, b_map): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
        .into_iter()
        .partition(|(k, _)| a_fields.contains(&k.as_str()));
    let a = serde_path_to_error::deserialize(serde_json::Value::Object(a_map))
        .map_err(nested_error::<E>)?;
    let b = serde_path_to_error::deserialize(serde_json::Value::Object(b_map))
        .map_err(nested_error::<E>)?;
    Ok((a, b))
}

/// Keys every device has; the rest of the mapping belongs to the device's kind.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommon {
    pub name: String,
    /// The bus the device sits on; its type decides the device's kind.
    #[serde(default)]
    pub bus: Option<String>,
    /// For devices without a bus (e.g. `host`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, with = "super::units::duration::option")]
    pub poll: Option<Duration>,
    /// Static fields added to every payload of this device (site, location, …).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Defaults for this device's points.
    #[serde(default)]
    pub qos: Option<QoS>,
    #[serde(default)]
    pub retain: Option<bool>,
    #[serde(default)]
    pub on_change: Option<bool>,
    #[serde(default, with = "super::units::duration::option")]
    pub heartbeat: Option<Duration>,
    /// Set false to keep a device in the map without polling it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl DeviceCommon {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "bus",
        "type",
        "poll",
        "tags",
        "qos",
        "retain",
        "on_change",
        "heartbeat",
        "enabled",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::issue::parse;
    use crate::config::locate::Path;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Reg {
        address: u16,
    }

    #[test]
    fn point_splits_common_and_kind() {
        let v = serde_json::json!({"name": "v", "unit": "V", "address": 3, "deadband": 0.5});
        let p: Point<Reg> = parse(&v, &Path::root()).unwrap();
        assert_eq!(p.common.name, "v");
        assert_eq!(p.common.unit.as_deref(), Some("V"));
        assert_eq!(p.common.deadband, Some(0.5));
        assert_eq!(p.kind, Reg { address: 3 });
    }

    #[test]
    fn point_errors_carry_inner_path() {
        let v = serde_json::json!({"points": [{"name": "v", "adress": 3}]});
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Dev {
            points: Vec<Point<Reg>>,
        }
        let err = parse::<Dev>(&v, &Path::root().key("devices").index(0)).unwrap_err();
        assert_eq!(err.path.to_string(), "devices[0].points[0].adress");
        assert!(err.at_key);
        assert!(
            err.message.contains("unknown field `adress`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn scaling_round_trips() {
        let c = PointCommon {
            scale: Some(0.1),
            offset: Some(-40.0),
            ..Default::default()
        };
        assert!((c.unapply_scale(c.apply_scale(523.0)) - 523.0).abs() < 1e-9);
    }
}
