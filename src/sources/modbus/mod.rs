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
        for (i, p) in dev.points.iter().enumerate() {
            catalog.push(CatalogEntry {
                device: Arc::from(d.common.name.as_str()),
                point: p.common.clone(),
                path: d.path.key("points").index(i),
            });
        }
        runtime.push(DeviceRt::resolve(&d.common, &dev, &timing));
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
