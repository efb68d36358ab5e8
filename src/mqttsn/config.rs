//! The `mqttsn:` section of the device map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `mqttsn:` section. Every field has a safe default, so `mqttsn: {}` runs a gateway on
/// `[::]:1884` (dual-stack where the OS allows it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSnConfig {
    /// One address or a list (e.g. `["0.0.0.0:1884", "[::]:1884"]` on v6only systems).
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<SocketAddr>,
    /// GwId in ADVERTISE / GWINFO.
    pub gateway_id: u8,
    /// Prepended (with `/`) to every MQTT-SN topic on its way upstream, stripped on the way
    /// down. Empty: topics are passed as they are.
    pub topic_prefix: String,
    pub advertise: Option<AdvertiseConfig>,
    /// Predefined topic ids shared by all clients: `{1: "sensors/temp"}`.
    pub predefined_topics: BTreeMap<u16, String>,
    /// If set, only these client ids may connect.
    pub allow_clients: Option<Vec<String>>,
    /// Per-client allowed topic prefixes (publish and subscribe), before `topic_prefix`.
    /// `{client}` in a prefix is replaced by the client id. Clients not listed use `"*"` if
    /// present, else may use any topic.
    pub client_topics: BTreeMap<String, Vec<String>>,
    /// Accept QoS -1 publishes (no connection; predefined or short topic ids only).
    pub qos_minus_one: bool,
    pub limits: Limits,
    /// Retransmission of gateway-initiated messages (REGISTER, PUBLISH QoS 1/2).
    #[serde(with = "crate::config::units::duration")]
    pub retry_interval: Duration,
    pub retry_count: u32,
    /// MQTT-SN frames over a serial line (mqtt-sn-tools serial bridge framing).
    pub serial: Option<SerialConfig>,
}

impl Default for MqttSnConfig {
    fn default() -> Self {
        MqttSnConfig {
            bind: vec![SocketAddr::from(([0u16; 8], 1884))],
            gateway_id: 1,
            topic_prefix: String::new(),
            advertise: None,
            predefined_topics: BTreeMap::new(),
            allow_clients: None,
            client_topics: BTreeMap::new(),
            qos_minus_one: true,
            limits: Limits::default(),
            retry_interval: Duration::from_secs(10),
            retry_count: 5,
            serial: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseConfig {
    #[serde(with = "crate::config::units::duration")]
    pub interval: Duration,
    /// Where ADVERTISE goes, e.g. `255.255.255.255:1884` or `[ff02::1]:1884`.
    pub address: SocketAddr,
}

/// Bounds on everything a client can make the gateway hold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_clients: usize,
    pub max_topics_per_client: usize,
    pub max_subscriptions_per_client: usize,
    /// Datagrams above this many bytes are dropped unread.
    pub max_packet_size: usize,
    /// Uplink QoS 1/2 publishes of one client awaiting the outbox.
    pub max_inflight: usize,
    /// Messages held for a sleeping (or busy) client; the oldest go first.
    pub max_held: usize,
    /// Packets per second per source address (token bucket).
    pub rate_per_source: f64,
    pub rate_burst: f64,
    /// Source addresses tracked by the rate limiter (further ones share one bucket).
    pub max_sources: usize,
    /// GWINFO answers per second, for all sources together.
    pub gwinfo_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 1000,
            max_topics_per_client: 64,
            max_subscriptions_per_client: 16,
            max_packet_size: 1024,
            max_inflight: 8,
            max_held: 64,
            rate_per_source: 100.0,
            rate_burst: 200.0,
            max_sources: 4096,
            gwinfo_per_second: 5.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    9600
}

impl MqttSnConfig {
    /// Semantic checks: (path suffix, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let l = &self.limits;
        if self.bind.is_empty() {
            errs.push(("bind".into(), "at least one address is needed".into()));
        }
        for (name, v) in [
            ("max_clients", l.max_clients),
            ("max_topics_per_client", l.max_topics_per_client),
            ("max_inflight", l.max_inflight),
            ("max_sources", l.max_sources),
        ] {
            if v == 0 {
                errs.push((format!("limits.{name}"), "must be at least 1".into()));
            }
        }
        if l.max_packet_size < 16 || l.max_packet_size > 65_535 {
            errs.push(("limits.max_packet_size".into(), "must be 16..=65535".into()));
        }
        if !(l.rate_per_source > 0.0 && l.rate_burst >= 1.0) {
            errs.push((
                "limits.rate_per_source".into(),
                "rate must be > 0 and burst >= 1".into(),
            ));
        }
        for (id, name) in &self.predefined_topics {
            if *id == 0 || *id == 0xFFFF {
                errs.push((
                    format!("predefined_topics.{id}"),
                    "ids 0 and 65535 are reserved".into(),
                ));
            }
            if !super::topics::valid_name(name) {
                errs.push((
                    format!("predefined_topics.{id}"),
                    format!("invalid topic name {name:?}"),
                ));
            }
        }
        if self.topic_prefix.contains(['+', '#']) {
            errs.push(("topic_prefix".into(), "must not contain wildcards".into()));
        }
        if self.retry_count == 0 || self.retry_interval.is_zero() {
            errs.push((
                "retry_interval".into(),
                "retries need a count and an interval".into(),
            ));
        }
        errs
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|e| serde::de::Error::custom(format!("bind {s:?}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_section() {
        let y = r#"
bind: ["0.0.0.0:1884", "[::1]:1885"]
gateway_id: 7
topic_prefix: mqttsn
advertise: { interval: 15m, address: "255.255.255.255:1884" }
predefined_topics: { 1: "sensors/temp", 2: "sensors/hum" }
allow_clients: [node-1, node-2]
client_topics: { node-1: ["sensors/node-1/"], "*": ["sensors/{client}/"] }
qos_minus_one: false
retry_interval: 5s
retry_count: 3
limits: { max_clients: 10, max_packet_size: 256 }
serial: { port: /dev/ttyUSB0, baud: 38400 }
"#;
        let c: MqttSnConfig = serde_saphyr::from_str(y).unwrap();
        assert_eq!(c.bind.len(), 2);
        assert_eq!(c.gateway_id, 7);
        assert_eq!(
            c.advertise.as_ref().unwrap().interval,
            Duration::from_secs(900)
        );
        assert_eq!(c.predefined_topics[&2], "sensors/hum");
        assert_eq!(c.limits.max_clients, 10);
        assert_eq!(c.limits.max_inflight, Limits::default().max_inflight);
        assert_eq!(c.serial.as_ref().unwrap().baud, 38400);
        assert!(!c.qos_minus_one);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        // the core hands sections over as JSON trees: integer keys arrive as strings
        let v: serde_json::Value = serde_saphyr::from_str(y).unwrap();
        let c2: MqttSnConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c, c2);
    }

    #[test]
    fn defaults_and_errors() {
        let c: MqttSnConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(c, MqttSnConfig::default());
        assert_eq!(c.bind[0].port(), 1884);
        let c: MqttSnConfig = serde_saphyr::from_str("bind: \"127.0.0.1:2000\"").unwrap();
        assert_eq!(c.bind[0].port(), 2000);
        assert!(serde_saphyr::from_str::<MqttSnConfig>("bnd: x").is_err());
        assert!(serde_saphyr::from_str::<MqttSnConfig>("bind: nonsense").is_err());
        let c: MqttSnConfig =
            serde_saphyr::from_str("predefined_topics: {0: \"a/+\"}\nlimits: {max_clients: 0}")
                .unwrap();
        let errs = c.validate();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../../config/mqttsn.yaml");
        let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let c: MqttSnConfig = serde_json::from_value(v["mqttsn"].clone()).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.predefined_topics.len(), 2);
    }
}
