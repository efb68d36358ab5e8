//! Sources: one task per bus (a serial line, a TCP endpoint, a radio) that turns what it reads
//! into [`SourceEvent`]s. Adding a kind of source means one module, its config types, and
//! one line in [`KINDS`].

pub mod ble;
pub mod host;
pub mod modbus;
pub mod serial;
pub mod synthetic;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec, Path, PointCommon};
use crate::message::QoS;
use crate::reading::Reading;

/// What a source tells the core.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    Reading(Reading),
    /// Device reachable or not; published retained on
    /// `{prefix}/{gateway}/{device}/availability` as `online` / `offline`.
    Availability {
        device: Arc<str>,
        online: bool,
    },
    /// A ready message whose topic is relative to `{prefix}/{gateway}/`
    /// (e.g. `main-meter/setpoint/set/result`).
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    },
}

/// A write for a point, from `{prefix}/{gateway}/{device}/{point}/set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub payload: Bytes,
    /// Retained `set` messages replay on every connect; sources ignore them unless told to.
    pub retained: bool,
}

/// What a running source gets from the core.
pub struct SourceContext {
    /// Bounded: `send().await` applies back-pressure instead of growing memory.
    pub events: mpsc::Sender<SourceEvent>,
    /// Writes for this source's writable points only.
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: CancellationToken,
}

/// A point a source will publish, known before it runs: used for topic checks, filters,
/// Home Assistant discovery and the `check` summary.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub device: Arc<str>,
    pub point: PointCommon,
    /// Where the point is written in the device map.
    pub path: Path,
    /// What its values look like (Home Assistant picks the entity type from it).
    pub kind: ValueKind,
}

/// The shape of a point's values, as far as the source knows it before running.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ValueKind {
    /// Numbers; a writable point also says which values a write may set (engineering units).
    #[default]
    Number,
    NumberRange {
        min: f64,
        max: f64,
        /// Smallest useful step of a write (1 for unscaled integers).
        step: f64,
    },
    Bool,
    Text,
}

/// One bus (or bus-less device group) and everything on it.
pub trait Source: Send + 'static {
    /// Name used in logs and metrics (the bus name, or the device name for bus-less sources).
    fn name(&self) -> &str;
    /// Runs until `ctx.shutdown` is cancelled. Device errors never end it: they are logged,
    /// counted, and turned into bad-quality readings and availability changes.
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()>;
}

/// A source ready to run, with the points it declares.
pub struct BuiltSource {
    pub source: Box<dyn Source>,
    pub catalog: Vec<CatalogEntry>,
}

/// Builds sources from the config without any I/O (so `check` can run it).
pub type BuildFn =
    fn(&Config, Option<&BusSpec>, &[&DeviceSpec]) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>>;

/// One kind of source.
pub struct Kind {
    /// Bus `type:` values it handles.
    pub bus_types: &'static [&'static str],
    /// Device `type:` for devices without a bus.
    pub device_type: Option<&'static str>,
    /// Called once per bus with the devices on it, or once with all devices of `device_type`.
    pub build: BuildFn,
}

/// The registry of source kinds.
pub const KINDS: &[Kind] = &[
    host::KIND,
    synthetic::KIND,
    modbus::KIND,
    serial::KIND,
    ble::KIND,
];

/// All sources of a config and their catalog.
pub struct Built {
    pub sources: Vec<BuiltSource>,
    pub catalog: Vec<CatalogEntry>,
}

/// Builds every source of the config, collecting every problem.
pub fn build_all(config: &Config) -> Result<Built, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut sources = Vec::new();
    let enabled: Vec<&DeviceSpec> = config.devices.iter().filter(|d| d.common.enabled).collect();
    for bus in &config.buses {
        let Some(kind) = KINDS
            .iter()
            .find(|k| k.bus_types.contains(&bus.kind.as_str()))
        else {
            issues.push(ConfigIssue::new(
                bus.path.key("type"),
                format!(
                    "unknown bus type `{}` (known: {})",
                    bus.kind,
                    known_bus_types()
                ),
            ));
            continue;
        };
        let on_bus: Vec<&DeviceSpec> = enabled
            .iter()
            .copied()
            .filter(|d| d.common.bus.as_deref() == Some(bus.name.as_str()))
            .collect();
        match (kind.build)(config, Some(bus), &on_bus) {
            Ok(b) => sources.extend(b),
            Err(e) => issues.extend(e),
        }
    }
    let mut types: Vec<&str> = enabled
        .iter()
        .filter_map(|d| d.common.kind.as_deref())
        .collect();
    types.sort_unstable();
    types.dedup();
    for t in types {
        let of_type: Vec<&DeviceSpec> = enabled
            .iter()
            .copied()
            .filter(|d| d.common.kind.as_deref() == Some(t))
            .collect();
        let Some(kind) = KINDS.iter().find(|k| k.device_type == Some(t)) else {
            for d in of_type {
                issues.push(ConfigIssue::new(
                    d.path.key("type"),
                    format!("unknown device type `{t}` (known: {}; devices on a bus take their kind from the bus)", known_device_types()),
                ));
            }
            continue;
        };
        match (kind.build)(config, None, &of_type) {
            Ok(b) => sources.extend(b),
            Err(e) => issues.extend(e),
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let catalog = sources
        .iter()
        .flat_map(|s| s.catalog.iter().cloned())
        .collect::<Vec<_>>();
    issues.extend(duplicate_points(&catalog));
    if issues.is_empty() {
        Ok(Built { sources, catalog })
    } else {
        Err(issues)
    }
}

fn duplicate_points(catalog: &[CatalogEntry]) -> Vec<ConfigIssue> {
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in catalog {
        if let Some(first) = seen.insert((e.device.clone(), e.point.name.clone()), e.path.clone()) {
            out.push(ConfigIssue::new(
                e.path.key("name"),
                format!(
                    "duplicate point `{}` in device `{}` (first at {first})",
                    e.point.name, e.device
                ),
            ));
        }
    }
    out
}

fn known_bus_types() -> String {
    KINDS
        .iter()
        .flat_map(|k| k.bus_types.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_device_types() -> String {
    KINDS
        .iter()
        .filter_map(|k| k.device_type)
        .collect::<Vec<_>>()
        .join(", ")
}
