//! `type: modbus-tcp | modbus-rtu | modbus-rtu-over-tcp` — Modbus field buses.
//!
//! Layout: [`config`] (device map types and checks), [`plan`] (request coalescing),
//! [`codec`] (registers <-> values), [`write`] (`…/set` commands), [`bus`] (the task that
//! schedules the slaves) and [`link`] (the wire). Everything but `bus` and `link` is pure.

pub mod bus;
pub mod codec;
pub mod config;
pub mod link;
pub mod plan;
pub mod write;

use std::sync::Arc;

use futures::future::BoxFuture;

use self::config::{Bus, DeviceRt, ModbusDevice, RtuTransport, TcpTransport, Timing, Transport};
use super::{BuiltSource, CatalogEntry, Kind, Source, SourceContext};
use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec};

pub const KIND: Kind = Kind {
    bus_types: config::BUS_TYPES,
    device_type: None,
    build,
};

/// One Modbus bus and its devices.
pub struct ModbusSource {
    name: Arc<str>,
    transport: Transport,
    timing: Timing,
    devices: Vec<DeviceRt>,
}

impl ModbusSource {
    pub fn new(
        name: &str,
        transport: Transport,
        timing: Timing,
        devices: Vec<DeviceRt>,
    ) -> ModbusSource {
        ModbusSource {
            name: Arc::from(name),
            transport,
            timing,
            devices,
        }
    }

    /// Read requests per poll cycle of each device, as planned (before any fallback).
    pub fn planned_requests(&self) -> Vec<(Arc<str>, usize)> {
        self.devices
            .iter()
            .map(|d| (d.name.clone(), plan::plan(&d.spans(), &d.limits).len()))
            .collect()
    }
}

impl Source for ModbusSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()> {
        let me = *self;
        let bus = bus::Bus::new(
            me.name,
            me.transport,
            me.timing,
            me.devices,
            ctx.events,
            ctx.shutdown,
        );
        bus::run_boxed(bus, ctx.commands)
    }
}

/// Parses and checks one bus with its devices, collecting every problem.
pub fn build(
    _config: &Config,
    bus: Option<&BusSpec>,
    devices: &[&DeviceSpec],
) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>> {
    let Some(bus) = bus else {
        return Ok(Vec::new());
    };
    let mut issues = Vec::new();
    let parsed = match bus.kind.as_str() {
        "modbus-tcp" => bus
            .parse::<Bus<TcpTransport>>()
            .map(|b| (b.timing, Transport::Tcp(b.transport))),
        "modbus-rtu-over-tcp" => bus
            .parse::<Bus<TcpTransport>>()
            .map(|b| (b.timing, Transport::RtuOverTcp(b.transport))),
        _ => bus
            .parse::<Bus<RtuTransport>>()
            .map(|b| (b.timing, Transport::Rtu(b.transport))),
    };
    let (timing, transport) = match parsed {
        Ok(v) => v,
        Err(e) => return Err(vec![e]),
    };
    for (k, m) in timing.validate() {
        issues.push(ConfigIssue::new(bus.path.join_str(&k), m));
    }
    match &transport {
        Transport::Rtu(r) => issues.extend(
            r.validate()
                .into_iter()
                .map(|(k, m)| ConfigIssue::new(bus.path.join_str(&k), m)),
        ),
        Transport::Tcp(t) | Transport::RtuOverTcp(t) if t.host.is_empty() => {
            issues.push(ConfigIssue::new(
                bus.path.key("host"),
                "host must not be empty",
            ));
        }
        _ => {}
    }
    let mut runtime = Vec::new();
    let mut catalog = Vec::new();
    for d in devices {
        let dev: ModbusDevice = match d.parse() {
            Ok(v) => v,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        let mut dev_issues: Vec<(String, String)> = dev.validate();
        if transport.is_rtu_framing() && !(1..=247).contains(&dev.unit) {
            dev_issues.push((
                "unit".into(),
                format!("unit {} is outside 1..=247 on an RTU bus", dev.unit),
            ));
        }
        if !dev_issues.is_empty() {
            issues.extend(
                dev_issues
                    .into_iter()
                    .map(|(k, m)| ConfigIssue::new(d.path.join_str(&k), m)),
            );
            continue;
        }
        let rt = DeviceRt::resolve(&d.common, &dev, &timing);
        for (i, p) in rt.points.iter().enumerate() {
            catalog.push(CatalogEntry {
                device: rt.name.clone(),
                point: p.common.clone(),
                path: d.path.key("points").index(i),
                kind: value_kind(p),
            });
        }
        runtime.push(rt);
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let source = ModbusSource::new(&bus.name, transport, timing, runtime);
    Ok(vec![BuiltSource {
        source: Box::new(source),
        catalog,
    }])
}

/// What a point's values look like, for the catalog: coils, discrete inputs and register bits
/// are booleans; numbers carry the range their data type can hold after scaling, so a
/// Home Assistant `number` entity accepts exactly what a write can encode.
fn value_kind(p: &config::PointSpec) -> crate::sources::ValueKind {
    use crate::sources::ValueKind;
    use codec::DataType as T;
    if p.bit.is_some() || matches!(p.span.table, plan::Table::Coil | plan::Table::DiscreteInput) {
        return ValueKind::Bool;
    }
    let (lo, hi) = match p.data_type {
        T::Bool => return ValueKind::Bool,
        T::String => return ValueKind::Text,
        T::U16 => (0.0, f64::from(u16::MAX)),
        T::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        T::U32 => (0.0, f64::from(u32::MAX)),
        T::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        // Beyond what a dashboard slider or box can sensibly hold.
        T::U64 => (0.0, 1e15),
        T::I64 | T::F32 | T::F64 => (-1e15, 1e15),
    };
    let (a, b) = (p.common.apply_scale(lo), p.common.apply_scale(hi));
    let integer = !matches!(p.data_type, T::F32 | T::F64);
    let step = match (integer, p.common.scale) {
        (true, Some(s)) if s != 0.0 => s.abs(),
        (true, _) => 1.0,
        (false, _) => 0.001,
    };
    ValueKind::NumberRange {
        min: a.min(b),
        max: a.max(b),
        step,
    }
}
