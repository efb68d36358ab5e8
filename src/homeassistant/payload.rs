//! Pure builders of Home Assistant MQTT discovery configs: one retained JSON document per
//! entity on `{ha_prefix}/{component}/{node_id}/{object_id}/config`.
//!
//! Grouping: one HA device for the gateway (with a connectivity entity on the status topic
//! and an outbox-depth entity from the health summary), and one HA device per edgebus device
//! linked to it with `via_device`. Every entity of a device is available only while both the
//! gateway (`…/status`) and the device (`…/{device}/availability`) say `online`.

use serde_json::{Map, Value, json};

use crate::config::{Config, PayloadFormat};
use crate::format::Formatter;
use crate::sources::{CatalogEntry, ValueKind};

/// One discovery config: where it goes and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub topic: String,
    pub payload: Value,
}

/// HA allows only these characters in `node_id` and `object_id`.
pub fn ha_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Device class and state class for a unit, following HA's sensor device classes. Only
/// units HA accepts for the class are mapped (HA rejects `temperature` in `degC`); a unit
/// shared by several classes (µg/m³: PM2.5 or PM10) gets none.
pub fn classes_for_unit(unit: &str) -> (Option<&'static str>, Option<&'static str>) {
    let m = Some("measurement");
    let total = Some("total_increasing");
    match unit {
        "°C" | "°F" | "K" => (Some("temperature"), m),
        "V" | "mV" | "kV" => (Some("voltage"), m),
        "A" | "mA" => (Some("current"), m),
        "W" | "kW" | "MW" => (Some("power"), m),
        "VA" | "kVA" => (Some("apparent_power"), m),
        "var" | "kvar" => (Some("reactive_power"), m),
        "Wh" | "kWh" | "MWh" => (Some("energy"), total),
        "Hz" => (Some("frequency"), m),
        // Humidity, battery, CPU load, valve position …: the point's name decides.
        "%" => (None, m),
        "hPa" | "Pa" | "kPa" | "bar" | "mbar" | "psi" => (Some("pressure"), m),
        "lx" => (Some("illuminance"), m),
        "ppm" => (Some("carbon_dioxide"), m),
        "m³" | "L" => (Some("volume"), total),
        "m³/h" | "L/min" => (Some("volume_flow_rate"), m),
        "dBm" => (Some("signal_strength"), m),
        "s" | "min" | "h" => (Some("duration"), m),
        "B" | "kB" | "MB" | "GB" => (Some("data_size"), m),
        _ => (None, m),
    }
}

/// The device class of a `%` point, from words in its name.
pub fn percent_class(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.contains("hum") || n == "rh" {
        Some("humidity")
    } else if n.contains("batt") {
        Some("battery")
    } else if n.contains("moist") {
        Some("moisture")
    } else {
        None
    }
}

/// Everything shared by the entities of one gateway.
pub struct Context<'a> {
    pub ha_prefix: &'a str,
    pub gateway: &'a str,
    /// `{prefix}/{gateway}`
    pub base: String,
    pub payload: PayloadFormat,
}

impl<'a> Context<'a> {
    pub fn new(config: &'a Config, ha_prefix: &'a str) -> Context<'a> {
        Context {
            ha_prefix,
            gateway: &config.gateway.id,
            base: config.base_topic(),
            payload: config.gateway.payload,
        }
    }

    fn gateway_ident(&self) -> String {
        format!("edgebus_{}", ha_id(self.gateway))
    }

    fn gateway_device(&self) -> Value {
        json!({
            "identifiers": [self.gateway_ident()],
            "name": self.gateway,
            "manufacturer": "edgebus",
            "model": "edgebus gateway",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn device(&self, name: &str) -> Value {
        json!({
            "identifiers": [format!("{}_{}", self.gateway_ident(), ha_id(name))],
            "name": name,
            "manufacturer": "edgebus",
            "via_device": self.gateway_ident(),
        })
    }

    fn status_topic(&self) -> String {
        format!("{}/status", self.base)
    }

    fn availability(&self, device: Option<&str>) -> Value {
        let mut list = vec![json!({
            "topic": self.status_topic(),
            "payload_available": "online",
            "payload_not_available": "offline",
        })];
        if let Some(d) = device {
            list.push(json!({
                "topic": format!("{}/{d}/availability", self.base),
                "payload_available": "online",
                "payload_not_available": "offline",
            }));
        }
        Value::Array(list)
    }

    fn topic(&self, component: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/{}/{}/config",
            self.ha_prefix,
            ha_id(self.gateway),
            ha_id(object_id)
        )
    }

    fn origin() -> Value {
        json!({"name": "edgebus", "sw": env!("CARGO_PKG_VERSION")})
    }

    /// The gateway's own entities: connectivity (status topic) and outbox depth (health).
    pub fn gateway_entities(&self) -> Vec<Announcement> {
        let ident = self.gateway_ident();
        let status = json!({
            "name": "Status",
            "unique_id": format!("{ident}_status"),
            "state_topic": self.status_topic(),
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": self.gateway_device(),
            "origin": Self::origin(),
        });
        let depth = json!({
            "name": "Outbox depth",
            "unique_id": format!("{ident}_outbox_depth"),
            "state_topic": format!("{}/health", self.base),
            "value_template": "{{ value_json.outbox.depth }}",
            "state_class": "measurement",
            "unit_of_measurement": "messages",
            "entity_category": "diagnostic",
            "availability": self.availability(None),
            "device": self.gateway_device(),
            "origin": Self::origin(),
        });
        vec![
            Announcement {
                topic: self.topic("binary_sensor", "status"),
                payload: status,
            },
            Announcement {
                topic: self.topic("sensor", "outbox_depth"),
                payload: depth,
            },
        ]
    }

    /// The entity of one catalogued point, on the topic the formatter publishes it to.
    pub fn point_entity(&self, e: &CatalogEntry, formatter: &Formatter) -> Announcement {
        let device = &*e.device;
        let point = &e.point;
        let state_topic = formatter.topic_of(device, &point.name);
        let json_payload = self.payload == PayloadFormat::Json;
        let object_id = format!("{device}_{}", point.name);
        let mut m = Map::new();
        m.insert("name".into(), json!(point.name));
        m.insert(
            "unique_id".into(),
            json!(format!("{}_{}", self.gateway_ident(), ha_id(&object_id))),
        );
        m.insert("state_topic".into(), json!(state_topic));
        m.insert("availability".into(), self.availability(Some(device)));
        m.insert("availability_mode".into(), json!("all"));
        m.insert("device".into(), self.device(device));
        m.insert("origin".into(), Self::origin());
        let bool_template = "{{ 'true' if value_json.value else 'false' }}";
        let component = match (e.kind, point.writable) {
            (ValueKind::Bool, true) => {
                m.insert("command_topic".into(), json!(format!("{state_topic}/set")));
                m.insert("payload_on".into(), json!("true"));
                m.insert("payload_off".into(), json!("false"));
                m.insert("state_on".into(), json!("true"));
                m.insert("state_off".into(), json!("false"));
                if json_payload {
                    m.insert("value_template".into(), json!(bool_template));
                }
                "switch"
            }
            (ValueKind::Bool, false) => {
                m.insert("payload_on".into(), json!("true"));
                m.insert("payload_off".into(), json!("false"));
                if json_payload {
                    m.insert("value_template".into(), json!(bool_template));
                }
                "binary_sensor"
            }
            (kind, writable) => {
                if json_payload {
                    m.insert("value_template".into(), json!("{{ value_json.value }}"));
                }
                let numeric = !matches!(kind, ValueKind::Text);
                if let (true, Some(unit)) = (numeric, point.unit.as_deref()) {
                    m.insert("unit_of_measurement".into(), json!(unit));
                    let (mut dc, sc) = classes_for_unit(unit);
                    if unit == "%" {
                        dc = percent_class(&point.name);
                    }
                    if let Some(dc) = dc {
                        m.insert("device_class".into(), json!(dc));
                    }
                    if let Some(sc) = sc {
                        m.insert("state_class".into(), json!(sc));
                    }
                } else if matches!(kind, ValueKind::NumberRange { .. }) {
                    // Without a unit only a known numeric type is sure to be a number: a
                    // source may publish text or booleans on a point it calls a number
                    // (an iBeacon UUID, a BTHome door contact), and HA rejects those
                    // states on a sensor with a state class.
                    m.insert("state_class".into(), json!("measurement"));
                }
                match (kind, writable) {
                    (ValueKind::NumberRange { min, max, step }, true) => {
                        m.insert("command_topic".into(), json!(format!("{state_topic}/set")));
                        m.insert("min".into(), json!(min));
                        m.insert("max".into(), json!(max));
                        m.insert("step".into(), json!(step));
                        m.insert("mode".into(), json!("box"));
                        // `number` has no state_class.
                        m.remove("state_class");
                        "number"
                    }
                    _ => "sensor",
                }
            }
        };
        Announcement {
            topic: self.topic(component, &object_id),
            payload: Value::Object(m),
        }
    }
}

/// Every discovery config for a map: the gateway's entities, then one per point.
pub fn announcements(
    config: &Config,
    ha_prefix: &str,
    catalog: &[CatalogEntry],
    formatter: &Formatter,
) -> Vec<Announcement> {
    let ctx = Context::new(config, ha_prefix);
    let mut out = ctx.gateway_entities();
    out.extend(catalog.iter().map(|e| ctx.point_entity(e, formatter)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(point: &str, unit: Option<&str>, kind: ValueKind, writable: bool) -> CatalogEntry {
        CatalogEntry {
            device: "d".into(),
            point: crate::config::PointCommon {
                name: point.into(),
                unit: unit.map(str::to_string),
                writable,
                ..Default::default()
            },
            path: crate::config::Path::root(),
            kind,
        }
    }

    #[test]
    fn raw_payloads_have_no_template_and_text_no_state_class() {
        let yaml = "gateway: {id: gw, payload: raw}\nupstream: {topic_prefix: p}\n";
        let cfg = Config::from_text(std::path::Path::new("m.yaml"), yaml, &|_| None).unwrap();
        let catalog = [
            entry("fix", None, ValueKind::Text, false),
            entry("relay", None, ValueKind::Bool, true),
        ];
        let f = Formatter::new(&cfg, &catalog);
        let ctx = Context::new(&cfg, "ha");
        let text = ctx.point_entity(&catalog[0], &f);
        assert_eq!(text.topic, "ha/sensor/gw/d_fix/config");
        assert_eq!(text.payload["state_topic"], "p/gw/d/fix");
        assert!(text.payload.get("value_template").is_none());
        assert!(text.payload.get("state_class").is_none());
        let relay = ctx.point_entity(&catalog[1], &f);
        assert_eq!(relay.topic, "ha/switch/gw/d_relay/config");
        assert_eq!(relay.payload["command_topic"], "p/gw/d/relay/set");
        assert_eq!(relay.payload["state_on"], "true");
        assert!(relay.payload.get("value_template").is_none());
    }

    #[test]
    fn ids_are_sanitised() {
        assert_eq!(ha_id("pi.boiler-room_1"), "pi_boiler-room_1");
        assert_eq!(ha_id("ä b"), "__b");
    }

    #[test]
    fn units_map_to_classes() {
        assert_eq!(
            classes_for_unit("°C"),
            (Some("temperature"), Some("measurement"))
        );
        assert_eq!(
            classes_for_unit("kWh"),
            (Some("energy"), Some("total_increasing"))
        );
        assert_eq!(classes_for_unit("%"), (None, Some("measurement")));
        assert_eq!(percent_class("humidity"), Some("humidity"));
        assert_eq!(percent_class("battery_level"), Some("battery"));
        assert_eq!(percent_class("soil_moisture"), Some("moisture"));
        assert_eq!(percent_class("memory_used"), None);
        assert_eq!(classes_for_unit("hPa").0, Some("pressure"));
        assert_eq!(classes_for_unit("W").0, Some("power"));
        assert_eq!(classes_for_unit("V").0, Some("voltage"));
        assert_eq!(classes_for_unit("A").0, Some("current"));
        assert_eq!(classes_for_unit("furlongs"), (None, Some("measurement")));
    }
}
