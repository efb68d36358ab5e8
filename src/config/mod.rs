//! The device map: one YAML file, parsed with serde-saphyr into a tree, secrets resolved,
//! then into typed sections. Every problem is reported as `FILE:LINE:COL: message`, and all
//! problems are reported at once so a user fixes a file in one pass.

pub mod issue;
pub mod locate;
pub mod point;
pub mod secret;
pub mod units;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};

use serde::Deserialize;

pub use issue::{ConfigIssue, parse};
pub use locate::{LocationIndex, Path};
pub use point::{DeviceCommon, Point, PointCommon};
pub use secret::Secret;
pub use units::{bytesize, duration};

use crate::homeassistant::HomeAssistantConfig;
use crate::mqttsn::MqttSnConfig;
use crate::outbox::BufferConfig;
use crate::upstream::UpstreamConfig;

/// Default location of the device map.
pub const DEFAULT_PATH: &str = "/etc/edgebus/edgebus.yaml";

/// Why a device map could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// One rendered line (`FILE:LINE:COL: message`) per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// `gateway:` — identity, state directory and how readings become messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Used in topics and as the MQTT client id.
    pub id: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Topic template; placeholders `{prefix}`, `{gateway}`, `{device}`, `{point}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Static fields added to every JSON payload (site, building, …).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When readings count as having a trustworthy timestamp (see `clock`).
    #[serde(default)]
    pub clock_check: crate::clock::ClockPolicy,
}

impl GatewayConfig {
    /// Stands in for a broken `gateway:` section while the rest is checked.
    fn placeholder() -> GatewayConfig {
        GatewayConfig {
            id: "gateway".into(),
            data_dir: default_data_dir(),
            topic: default_topic(),
            payload: PayloadFormat::default(),
            tags: BTreeMap::new(),
            clock_check: Default::default(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgebus")
}
fn default_topic() -> String {
    crate::format::DEFAULT_TOPIC.to_string()
}

/// Payload encoding of readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{"value": 23.1, "unit": "°C", "ts": "…"}` (+ quality when not good, + tags)
    #[default]
    Json,
    /// The value as text, nothing else.
    Raw,
}

/// `metrics:` — Prometheus endpoint and the retained health summary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub bind: Option<std::net::SocketAddr>,
    #[serde(default = "default_health", with = "units::duration")]
    pub health_interval: std::time::Duration,
}

fn default_health() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// A bus as written: name and type parsed, the rest left to the source kind.
#[derive(Debug, Clone)]
pub struct BusSpec {
    pub name: String,
    pub kind: String,
    pub rest: serde_json::Value,
    pub path: Path,
}

impl BusSpec {
    /// Parses the kind-specific part of the bus.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigIssue> {
        parse(&self.rest, &self.path)
    }
}

/// A device as written: the shared header parsed, the rest left to the source kind.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub common: DeviceCommon,
    pub rest: serde_json::Value,
    pub path: Path,
}

impl DeviceSpec {
    /// Parses the kind-specific part of the device.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigIssue> {
        parse(&self.rest, &self.path)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Top {
    gateway: serde_json::Value,
    #[serde(default)]
    upstream: Option<serde_json::Value>,
    #[serde(default)]
    buffer: Option<serde_json::Value>,
    #[serde(default)]
    mqttsn: Option<serde_json::Value>,
    #[serde(default)]
    metrics: Option<serde_json::Value>,
    #[serde(default)]
    homeassistant: Option<serde_json::Value>,
    #[serde(default)]
    buses: Vec<serde_json::Value>,
    #[serde(default)]
    devices: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BusHeader {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A parsed, validated device map.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub gateway: GatewayConfig,
    pub upstream: UpstreamConfig,
    pub buffer: BufferConfig,
    pub mqttsn: Option<MqttSnConfig>,
    pub metrics: Option<MetricsConfig>,
    pub homeassistant: Option<HomeAssistantConfig>,
    pub buses: Vec<BusSpec>,
    pub devices: Vec<DeviceSpec>,
}

impl Config {
    /// Reads and validates a device map, resolving `${VAR}` from the process environment.
    pub fn load(file: &FsPath) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.display().to_string(),
            source,
        })?;
        Config::from_text(file, &text, &|k| std::env::var(k).ok())
    }

    /// Parses a device map from text; `file` is only used in messages and relative paths.
    pub fn from_text(
        file: &FsPath,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let shown = file.display().to_string();
        let mut tree: serde_json::Value =
            match serde_saphyr::from_str_with_options(text, yaml_options()) {
                Ok(t) => t,
                Err(e) => {
                    let (line, col) = e
                        .location()
                        .map(|l| (l.line(), l.column()))
                        .unwrap_or((1, 1));
                    let msg = strip_location(&first_line(&e.to_string()));
                    return Err(ConfigError::Invalid(vec![format!(
                        "{shown}:{line}:{col}: {msg}"
                    )]));
                }
            };
        let index = LocationIndex::build(text);
        let render = |mut issues: Vec<ConfigIssue>| -> ConfigError {
            issues.dedup();
            let mut lines: Vec<(usize, usize, String)> = issues
                .iter()
                .map(|i| {
                    let (line, col, text) = render_issue(&shown, &index, i);
                    (line, col, text)
                })
                .collect();
            lines.sort();
            ConfigError::Invalid(lines.into_iter().map(|(_, _, t)| t).collect())
        };

        let mut issues: Vec<ConfigIssue> = secret::resolve(&mut tree, env)
            .into_iter()
            .map(|s| ConfigIssue::new(s.path, s.message))
            .collect();
        if tree.is_null() {
            return Err(render(vec![ConfigIssue::new(
                Path::root(),
                "the file is empty",
            )]));
        }
        let top: Top = match parse(&tree, &Path::root()) {
            Ok(t) => t,
            Err(e) => {
                issues.push(e);
                return Err(render(issues));
            }
        };
        let root = Path::root();
        let section = |v: Option<&serde_json::Value>| {
            v.cloned()
                .unwrap_or(serde_json::Value::Object(Default::default()))
        };
        let gateway = parse::<GatewayConfig>(&top.gateway, &root.key("gateway"));
        let upstream =
            parse::<UpstreamConfig>(&section(top.upstream.as_ref()), &root.key("upstream"));
        let buffer = parse::<BufferConfig>(&section(top.buffer.as_ref()), &root.key("buffer"));
        let mqttsn = top
            .mqttsn
            .as_ref()
            .map(|v| parse::<MqttSnConfig>(v, &root.key("mqttsn")))
            .transpose();
        let metrics = top
            .metrics
            .as_ref()
            .map(|v| parse::<MetricsConfig>(v, &root.key("metrics")))
            .transpose();
        let homeassistant = top
            .homeassistant
            .as_ref()
            .map(|v| parse::<HomeAssistantConfig>(v, &root.key("homeassistant")))
            .transpose();

        let mut buses = Vec::new();
        for (i, raw) in top.buses.iter().enumerate() {
            let path = root.key("buses").index(i);
            match split::<BusHeader>(raw, &path, &["name", "type"]) {
                Ok((h, rest)) => buses.push(BusSpec {
                    name: h.name,
                    kind: h.kind,
                    rest,
                    path,
                }),
                Err(e) => issues.push(e),
            }
        }
        let mut devices = Vec::new();
        for (i, raw) in top.devices.iter().enumerate() {
            let path = root.key("devices").index(i);
            match split::<DeviceCommon>(raw, &path, DeviceCommon::FIELDS) {
                Ok((common, rest)) => devices.push(DeviceSpec { common, rest, path }),
                Err(e) => issues.push(e),
            }
        }

        // A broken section is reported, and a default stands in for it so that devices and
        // topics are still checked: the user sees every problem in one run.
        let empty = serde_json::Value::Object(Default::default());
        let gateway = gateway.unwrap_or_else(|e| {
            issues.push(e);
            GatewayConfig::placeholder()
        });
        let upstream = match upstream {
            Ok(u) => u,
            Err(e) => {
                issues.push(e);
                match parse::<UpstreamConfig>(&empty, &root.key("upstream")) {
                    Ok(u) => u,
                    Err(_) => return Err(render(issues)),
                }
            }
        };
        let buffer = buffer.unwrap_or_else(|e| {
            issues.push(e);
            BufferConfig::default()
        });
        let mqttsn = mqttsn.unwrap_or_else(|e| {
            issues.push(e);
            None
        });
        let metrics = metrics.unwrap_or_else(|e| {
            issues.push(e);
            None
        });
        let homeassistant = homeassistant.unwrap_or_else(|e| {
            issues.push(e);
            None
        });
        issues.extend(check_names(&buses, &devices));
        issues.extend(check_gateway(&gateway));
        let located = |base: Path, list: Vec<(String, String)>| {
            list.into_iter()
                .map(move |(rel, msg)| ConfigIssue::new(base.join_str(&rel), msg))
                .collect::<Vec<_>>()
        };
        issues.extend(located(root.key("upstream"), upstream.validate()));
        issues.extend(located(root.key("buffer"), buffer.validate()));
        if let Some(m) = &mqttsn {
            issues.extend(located(root.key("mqttsn"), m.validate()));
        }
        if let Some(h) = &homeassistant {
            issues.extend(located(root.key("homeassistant"), h.validate()));
        }

        let mut config = Config {
            file: file.to_path_buf(),
            gateway,
            upstream,
            buffer,
            mqttsn,
            metrics,
            homeassistant,
            buses,
            devices,
        };
        config.resolve_relative_paths();
        // Source kinds and topics are checked by building the sources (no I/O).
        match crate::sources::build_all(&config) {
            Ok(built) => issues.extend(crate::format::check_topics(&config, &built.catalog)),
            Err(source_issues) => issues.extend(source_issues),
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(render(issues))
        }
    }

    /// `data_dir` relative to the config file's folder, so demo configs work from a checkout.
    fn resolve_relative_paths(&mut self) {
        if self.gateway.data_dir.is_relative()
            && let Some(dir) = self.file.parent()
        {
            self.gateway.data_dir = dir.join(&self.gateway.data_dir);
        }
    }

    /// The prefix used in topics.
    pub fn prefix(&self) -> &str {
        &self.upstream.topic_prefix
    }

    /// `{prefix}/{gateway}` — the root under which everything of this gateway is published.
    pub fn base_topic(&self) -> String {
        join_topic(self.prefix(), &self.gateway.id)
    }
}

/// Joins two topic levels, skipping an empty prefix.
pub fn join_topic(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn split<H: serde::de::DeserializeOwned>(
    raw: &serde_json::Value,
    path: &Path,
    fields: &[&str],
) -> Result<(H, serde_json::Value), ConfigIssue> {
    let Some(map) = raw.as_object() else {
        return Err(ConfigIssue::new(path.clone(), "expected a mapping"));
    };
    let (head, rest): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
        .clone()
        .into_iter()
        .partition(|(k, _)| fields.contains(&k.as_str()));
    let h = parse::<H>(&serde_json::Value::Object(head), path)?;
    Ok((h, serde_json::Value::Object(rest)))
}

fn check_gateway(g: &GatewayConfig) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    let p = Path::root().key("gateway");
    if !crate::format::is_topic_level(&g.id) {
        out.push(ConfigIssue::new(
            p.key("id"),
            format!(
                "`{}` cannot be used in topics: use letters, digits, `-`, `_` or `.`",
                g.id
            ),
        ));
    }
    if let Err(e) = crate::format::TopicTemplate::parse(&g.topic) {
        out.push(ConfigIssue::new(p.key("topic"), e));
    }
    out
}

fn check_names(buses: &[BusSpec], devices: &[DeviceSpec]) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for b in buses {
        if let Some(first) = seen.insert(&b.name, &b.path) {
            out.push(ConfigIssue::new(
                b.path.key("name"),
                format!("duplicate bus name `{}` (first defined at {first})", b.name),
            ));
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for d in devices {
        let name = d.common.name.as_str();
        if !crate::format::is_topic_level(name) {
            out.push(ConfigIssue::new(
                d.path.key("name"),
                format!("device name `{name}` cannot be used in topics: use letters, digits, `-`, `_` or `.`"),
            ));
        }
        if let Some(first) = seen.insert(name, &d.path) {
            out.push(ConfigIssue::new(
                d.path.key("name"),
                format!("duplicate device name `{name}` (first defined at {first})"),
            ));
        }
        match (&d.common.bus, &d.common.kind) {
            (Some(bus), _) if !buses.iter().any(|b| &b.name == bus) => {
                let known: Vec<&str> = buses.iter().map(|b| b.name.as_str()).collect();
                out.push(ConfigIssue::new(
                    d.path.key("bus"),
                    format!(
                        "device `{name}` names bus `{bus}`, which is not defined (buses: {})",
                        list(&known)
                    ),
                ));
            }
            (Some(_), Some(_)) => out.push(ConfigIssue::new(
                d.path.key("type"),
                "give either `bus` (the bus type decides the device kind) or `type`, not both",
            )),
            (None, None) => out.push(ConfigIssue::new(
                d.path.clone(),
                format!("device `{name}` needs a `bus` or a `type` (e.g. `type: host`)"),
            )),
            _ => {}
        }
    }
    out
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// YAML 1.2 booleans only: `y`, `no` and `on` stay strings (a device named `y`, a Modbus
/// parity `no`), as users expect.
fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// The parser repeats the location in its message; we print it once, in front.
fn strip_location(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        m = after;
    }
    if let Some(i) = m.rfind(" at line ") {
        m = &m[..i];
    }
    m.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// `FILE:LINE:COL: message`, with the line and column for sorting.
pub fn render_issue(
    file: &str,
    index: &LocationIndex,
    issue: &ConfigIssue,
) -> (usize, usize, String) {
    let loc = if issue.at_key {
        index.key(&issue.path)
    } else {
        index.value(&issue.path)
    };
    let (line, col) = loc.map(|l| (l.line, l.col)).unwrap_or((1, 1));
    let msg = if issue.path.0.is_empty() {
        issue.message.clone()
    } else {
        format!("{} (at {})", issue.message, issue.path)
    };
    (line, col, format!("{file}:{line}:{col}: {msg}"))
}
