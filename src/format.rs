//! Readings to MQTT messages: topic templates, payload encodings, and the report-on-change
//! filters (deadband, heartbeat) that keep a chatty sensor from flooding a metered link.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::config::{Config, ConfigIssue, PayloadFormat, PointCommon, join_topic};
use crate::message::{Message, QoS};
use crate::reading::{Quality, Reading, Value};
use crate::sources::CatalogEntry;

/// Default topic of a reading.
pub const DEFAULT_TOPIC: &str = "{prefix}/{gateway}/{device}/{point}";

/// True when `s` can be one topic level and a template value: no wildcards, separators or
/// control characters, so a device name can never inject a topic.
pub fn is_topic_level(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Prefix,
    Gateway,
    Device,
    Point,
}

/// A parsed topic template such as `{prefix}/{gateway}/{device}/{point}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicTemplate(Vec<Part>);

impl TopicTemplate {
    pub fn parse(t: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(i) = rest.find('{') {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_string()));
            }
            let Some(end) = rest[i..].find('}') else {
                return Err(format!("unterminated `{{` in topic template `{t}`"));
            };
            parts.push(match &rest[i + 1..i + end] {
                "prefix" => Part::Prefix,
                "gateway" => Part::Gateway,
                "device" => Part::Device,
                "point" => Part::Point,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` in topic template (use {{prefix}}, {{gateway}}, {{device}}, {{point}})"
                    ));
                }
            });
            rest = &rest[i + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if t.contains('#') || t.contains('+') {
            return Err(format!("topic template `{t}` must not contain wildcards"));
        }
        Ok(TopicTemplate(parts))
    }

    /// Renders the topic; empty levels (an empty prefix) are dropped.
    pub fn render(&self, prefix: &str, gateway: &str, device: &str, point: &str) -> String {
        let mut s = String::with_capacity(64);
        for p in &self.0 {
            s.push_str(match p {
                Part::Lit(l) => l,
                Part::Prefix => prefix,
                Part::Gateway => gateway,
                Part::Device => device,
                Part::Point => point,
            });
        }
        s.split('/')
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Publishing rules of one point, resolved from point, device and gateway settings.
#[derive(Debug, Clone)]
struct Rule {
    topic: String,
    qos: QoS,
    retain: bool,
    on_change: bool,
    deadband: Option<f64>,
    heartbeat: Option<Duration>,
    tags: Arc<BTreeMap<String, String>>,
    unit: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
struct LastSent {
    value: Value,
    quality: Quality,
    at: SystemTime,
}

/// Device-level defaults, used for points a source discovers at run time (e.g. BLE decoders).
#[derive(Debug, Clone)]
struct DeviceDefaults {
    qos: QoS,
    retain: bool,
    on_change: bool,
    heartbeat: Option<Duration>,
    tags: Arc<BTreeMap<String, String>>,
}

/// Turns readings into messages, applying per-point rules and filters.
pub struct Formatter {
    prefix: String,
    gateway: String,
    template: TopicTemplate,
    payload: PayloadFormat,
    gateway_tags: BTreeMap<String, String>,
    rules: HashMap<(Arc<str>, Arc<str>), Rule>,
    devices: HashMap<Arc<str>, DeviceDefaults>,
    last: HashMap<(Arc<str>, Arc<str>), LastSent>,
    /// Bound on points learnt at run time, so a misbehaving source cannot grow memory.
    max_dynamic: usize,
    clock: crate::clock::ClockCheck,
}

impl Formatter {
    pub fn new(config: &Config, catalog: &[CatalogEntry]) -> Formatter {
        let template = TopicTemplate::parse(&config.gateway.topic).unwrap_or_else(|_| {
            TopicTemplate::parse(DEFAULT_TOPIC).unwrap_or(TopicTemplate(Vec::new()))
        });
        let mut f = Formatter {
            prefix: config.prefix().to_string(),
            gateway: config.gateway.id.clone(),
            template,
            payload: config.gateway.payload,
            gateway_tags: config.gateway.tags.clone(),
            rules: HashMap::new(),
            devices: HashMap::new(),
            last: HashMap::new(),
            max_dynamic: 10_000,
            clock: crate::clock::ClockCheck::new(config.gateway.clock_check),
        };
        for d in &config.devices {
            let c = &d.common;
            let mut tags = f.gateway_tags.clone();
            tags.extend(c.tags.clone());
            f.devices.insert(
                Arc::from(c.name.as_str()),
                DeviceDefaults {
                    qos: c.qos.unwrap_or(QoS::AtLeastOnce),
                    retain: c.retain.unwrap_or(false),
                    on_change: c.on_change.unwrap_or(false),
                    heartbeat: c.heartbeat,
                    tags: Arc::new(tags),
                },
            );
        }
        for e in catalog {
            let rule = f.rule_for(&e.device, &e.point);
            f.rules
                .insert((e.device.clone(), Arc::from(e.point.name.as_str())), rule);
        }
        f
    }

    fn rule_for(&self, device: &Arc<str>, p: &PointCommon) -> Rule {
        let d = self
            .devices
            .get(device)
            .cloned()
            .unwrap_or_else(|| DeviceDefaults {
                qos: QoS::AtLeastOnce,
                retain: false,
                on_change: false,
                heartbeat: None,
                tags: Arc::new(self.gateway_tags.clone()),
            });
        let template = p
            .topic
            .as_deref()
            .and_then(|t| TopicTemplate::parse(t).ok())
            .unwrap_or_else(|| self.template.clone());
        let tags = if p.tags.is_empty() {
            d.tags.clone()
        } else {
            let mut t = (*d.tags).clone();
            t.extend(p.tags.clone());
            Arc::new(t)
        };
        Rule {
            topic: template.render(&self.prefix, &self.gateway, device, &p.name),
            qos: p.qos.unwrap_or(d.qos),
            retain: p.retain.unwrap_or(d.retain),
            on_change: p.on_change.unwrap_or(d.on_change || p.deadband.is_some()),
            deadband: p.deadband,
            heartbeat: p.heartbeat.or(d.heartbeat),
            tags,
            unit: p.unit.as_deref().map(Arc::from),
        }
    }

    /// The topic a point publishes on.
    pub fn topic_of(&self, device: &str, point: &str) -> String {
        let key: (Arc<str>, Arc<str>) = (Arc::from(device), Arc::from(point));
        match self.rules.get(&key) {
            Some(r) => r.topic.clone(),
            None => self
                .template
                .render(&self.prefix, &self.gateway, device, point),
        }
    }

    /// The message for a reading, or `None` when a filter holds it back.
    pub fn format(&mut self, r: &Reading) -> Option<Message> {
        let key = (r.device.clone(), r.point.clone());
        if !self.rules.contains_key(&key) {
            if self.rules.len() >= self.max_dynamic {
                metrics::counter!("edgebus_readings_dropped_total", "reason" => "too_many_points")
                    .increment(1);
                return None;
            }
            let common = PointCommon {
                name: r.point.to_string(),
                ..Default::default()
            };
            let rule = self.rule_for(&r.device, &common);
            self.rules.insert(key.clone(), rule);
        }
        let rule = self.rules.get(&key)?;
        if let Some(last) = self.last.get(&key)
            && !should_publish(rule, last, r)
        {
            return None;
        }
        let unit = r.unit.clone().or_else(|| rule.unit.clone());
        let clock_ok = self.clock.is_synced(r.ts);
        let payload = match self.payload {
            PayloadFormat::Raw => Bytes::from(r.value.to_string()),
            PayloadFormat::Json => json_payload(r, unit.as_deref(), &rule.tags, clock_ok),
        };
        let msg = Message {
            seq: 0,
            topic: rule.topic.clone(),
            payload,
            qos: rule.qos,
            retain: rule.retain,
            ts: r.ts,
        };
        self.last.insert(
            key,
            LastSent {
                value: r.value.clone(),
                quality: r.quality,
                at: r.ts,
            },
        );
        Some(msg)
    }

    /// `{prefix}/{gateway}/{device}/availability`, retained.
    pub fn availability(&self, device: &str, online: bool) -> Message {
        let topic = format!(
            "{}/{device}/availability",
            join_topic(&self.prefix, &self.gateway)
        );
        Message::new(
            topic,
            if online { "online" } else { "offline" },
            QoS::AtLeastOnce,
            true,
        )
    }

    /// A message whose topic is relative to `{prefix}/{gateway}/`.
    pub fn relative(&self, topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message::new(
            format!("{}/{topic}", join_topic(&self.prefix, &self.gateway)),
            payload,
            qos,
            retain,
        )
    }
}

fn should_publish(rule: &Rule, last: &LastSent, r: &Reading) -> bool {
    if r.quality != last.quality {
        return true;
    }
    if let Some(hb) = rule.heartbeat
        && r.ts.duration_since(last.at).unwrap_or_default() >= hb
    {
        return true;
    }
    if !rule.on_change {
        return true;
    }
    match (rule.deadband, r.value.as_f64(), last.value.as_f64()) {
        (Some(db), Some(now), Some(before)) => {
            (now - before).abs() > db || now.is_nan() != before.is_nan()
        }
        _ => r.value != last.value,
    }
}

fn json_payload(
    r: &Reading,
    unit: Option<&str>,
    tags: &BTreeMap<String, String>,
    clock_ok: bool,
) -> Bytes {
    let mut m = serde_json::Map::new();
    m.insert("value".into(), r.value.to_json());
    if let Some(u) = unit {
        m.insert("unit".into(), serde_json::Value::String(u.to_string()));
    }
    m.insert("ts".into(), serde_json::Value::String(rfc3339_ms(r.ts)));
    if r.quality != Quality::Good {
        m.insert(
            "quality".into(),
            serde_json::Value::String(r.quality.as_str().into()),
        );
    }
    if !clock_ok {
        m.insert("clock".into(), serde_json::Value::String("unsynced".into()));
    }
    for (k, v) in tags {
        m.entry(k.clone())
            .or_insert_with(|| serde_json::Value::String(v.clone()));
    }
    Bytes::from(serde_json::Value::Object(m).to_string())
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn rfc3339_ms(ts: SystemTime) -> String {
    humantime::format_rfc3339_millis(ts).to_string()
}

/// Two points that would publish on the same topic, or a point that would shadow a topic the
/// gateway itself uses.
pub fn check_topics(config: &Config, catalog: &[CatalogEntry]) -> Vec<ConfigIssue> {
    let f = Formatter::new(config, catalog);
    let base = config.base_topic();
    let mut reserved: HashMap<String, String> = HashMap::new();
    reserved.insert(format!("{base}/status"), "the gateway status topic".into());
    reserved.insert(format!("{base}/health"), "the gateway health topic".into());
    for d in &config.devices {
        reserved.insert(
            format!("{base}/{}/availability", d.common.name),
            format!("the availability topic of device `{}`", d.common.name),
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for e in catalog {
        if !is_topic_level(&e.point.name) {
            out.push(ConfigIssue::new(
                e.path.key("name"),
                format!("point name `{}` cannot be used in topics: use letters, digits, `-`, `_` or `.`", e.point.name),
            ));
            continue;
        }
        if let Some(t) = &e.point.topic
            && let Err(msg) = TopicTemplate::parse(t)
        {
            out.push(ConfigIssue::new(e.path.key("topic"), msg));
            continue;
        }
        let topic = f.topic_of(&e.device, &e.point.name);
        let who = format!("point `{}` of device `{}`", e.point.name, e.device);
        if let Some(what) = reserved.get(&topic) {
            out.push(ConfigIssue::new(
                e.path.clone(),
                format!("{who} would publish on {what} (`{topic}`)"),
            ));
        } else if let Some(first) = seen.get(&topic) {
            out.push(ConfigIssue::new(
                e.path.clone(),
                format!("{who} publishes to `{topic}`, the same topic as {first}"),
            ));
        } else {
            seen.insert(topic, who);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_and_rejects() {
        let t = TopicTemplate::parse(DEFAULT_TOPIC).unwrap();
        assert_eq!(t.render("plant", "gw", "meter", "v"), "plant/gw/meter/v");
        assert_eq!(t.render("", "gw", "meter", "v"), "gw/meter/v");
        assert!(TopicTemplate::parse("{prefix}/{nope}").is_err());
        assert!(TopicTemplate::parse("{prefix}/#").is_err());
        assert!(TopicTemplate::parse("{prefix").is_err());
    }

    #[test]
    fn topic_levels() {
        assert!(is_topic_level("main-meter_1.a"));
        assert!(!is_topic_level("a/b"));
        assert!(!is_topic_level("a+"));
        assert!(!is_topic_level(""));
    }

    fn rule(on_change: bool, deadband: Option<f64>, heartbeat: Option<Duration>) -> Rule {
        Rule {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            on_change,
            deadband,
            heartbeat,
            tags: Arc::new(BTreeMap::new()),
            unit: None,
        }
    }

    fn last(v: f64, at: SystemTime) -> LastSent {
        LastSent {
            value: Value::Float(v),
            quality: Quality::Good,
            at,
        }
    }

    #[test]
    fn deadband_and_heartbeat() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let r = |v: f64, dt: u64| {
            Reading::new("d", "p", Value::Float(v)).with_ts(t0 + Duration::from_secs(dt))
        };
        let db = rule(true, Some(0.5), Some(Duration::from_secs(60)));
        assert!(!should_publish(&db, &last(10.0, t0), &r(10.4, 1)));
        assert!(should_publish(&db, &last(10.0, t0), &r(10.6, 1)));
        assert!(should_publish(&db, &last(10.0, t0), &r(10.0, 60)));
        let oc = rule(true, None, None);
        assert!(!should_publish(&oc, &last(1.0, t0), &r(1.0, 5)));
        assert!(should_publish(&oc, &last(1.0, t0), &r(2.0, 5)));
        let all = rule(false, None, None);
        assert!(should_publish(&all, &last(1.0, t0), &r(1.0, 5)));
        let bad = Reading::new("d", "p", Value::Float(1.0))
            .with_quality(Quality::Bad)
            .with_ts(t0);
        assert!(should_publish(&oc, &last(1.0, t0), &bad));
    }

    #[test]
    fn json_payload_shape() {
        let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_341_600_123);
        let r = Reading::new("d", "p", Value::Float(23.15)).with_ts(ts);
        let mut tags = BTreeMap::new();
        tags.insert("site".to_string(), "boiler".to_string());
        let p = json_payload(&r, Some("°C"), &tags, true);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["value"], 23.15);
        assert_eq!(v["unit"], "°C");
        assert_eq!(v["ts"], "2026-11-22T10:00:00.123Z");
        assert_eq!(v["site"], "boiler");
        assert!(v.get("quality").is_none());
        let p = json_payload(&r.clone().with_quality(Quality::Bad), None, &tags, false);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["quality"], "bad");
        assert_eq!(v["clock"], "unsynced");
    }
}
