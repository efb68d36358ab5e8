//! `type: serial` — line-based sensors on a UART or USB serial port: GPS receivers (NMEA
//! 0183), weather and particulate sensors, scales, Arduino sketches. One task per port;
//! each line goes to the device being polled or to the streaming devices that accept it.
//!
//! - `framer`: bytes → bounded lines (pure)
//! - `parse/`: line → fields, one parser per format (pure)
//! - `engine`: routing, polling, availability (pure: bytes and time in, actions out)
//! - `port`: the I/O shell (open, read, write, reopen with backoff)

pub mod config;
pub mod engine;
pub mod framer;
pub mod parse;
pub mod port;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use self::config::{DEFAULT_POLL, Encoding, SerialBus, SerialDevice};
use self::engine::{DeviceRt, Engine, PointRt, PollRt, SerialStats};
use self::framer::Framer;
use super::{BuiltSource, CatalogEntry, Kind, Source, SourceContext};
use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec};

pub const KIND: Kind = Kind {
    bus_types: &["serial"],
    device_type: None,
    build,
};

fn build(
    _config: &Config,
    bus: Option<&BusSpec>,
    devices: &[&DeviceSpec],
) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>> {
    let Some(bus) = bus else {
        return Ok(Vec::new());
    };
    let (source, catalog) = build_source(bus, devices)?;
    if catalog.is_empty() {
        tracing::info!(bus = %bus.name, "serial bus has no devices; not opening it");
        return Ok(Vec::new());
    }
    Ok(vec![BuiltSource {
        source: Box::new(source),
        catalog,
    }])
}

/// Builds the source for one serial bus and the devices on it, without touching the port.
pub fn build_source(
    bus: &BusSpec,
    devices: &[&DeviceSpec],
) -> Result<(SerialSource, Vec<CatalogEntry>), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let cfg: Option<SerialBus> = match bus.parse() {
        Ok(b) => Some(b),
        Err(e) => {
            issues.push(e);
            None
        }
    };
    if let Some(b) = &cfg {
        for (k, m) in b.validate() {
            issues.push(ConfigIssue::new(bus.path.join_str(&k), m));
        }
    }
    let mut rts = Vec::new();
    let mut catalog = Vec::new();
    for d in devices {
        let dev: SerialDevice = match d.parse() {
            Ok(v) => v,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        let found = dev.validate(d.common.poll);
        if !found.is_empty() {
            issues.extend(
                found
                    .into_iter()
                    .map(|(k, m)| ConfigIssue::new(d.path.join_str(&k), m)),
            );
            continue;
        }
        let encoding = cfg.as_ref().map(|c| c.encoding).unwrap_or_default();
        let rt = match device_rt(&d.common.name, &dev, d.common.poll, encoding) {
            Ok(rt) => rt,
            Err((k, m)) => {
                issues.push(ConfigIssue::new(d.path.join_str(&k), m));
                continue;
            }
        };
        for (i, (p, prt)) in dev.points.iter().zip(&rt.points).enumerate() {
            let mut point = p.common.clone();
            point.unit = prt.unit.as_deref().map(str::to_string);
            catalog.push(CatalogEntry {
                device: rt.name.clone(),
                point,
                path: d.path.key("points").index(i),
                kind: match prt.ty {
                    parse::value::ValueType::Bool => crate::sources::ValueKind::Bool,
                    parse::value::ValueType::Text => crate::sources::ValueKind::Text,
                    _ => crate::sources::ValueKind::Number,
                },
            });
        }
        rts.push(rt);
    }
    match cfg {
        Some(cfg) if issues.is_empty() => {
            let stats = Arc::new(SerialStats::default());
            let max_line = usize::try_from(cfg.max_line).unwrap_or(usize::MAX);
            let engine = Engine::new(
                Arc::from(bus.name.as_str()),
                Framer::new(cfg.delimiter.0, max_line),
                rts,
                cfg.idle_timeout,
                stats,
            )
            .with_encoding(cfg.encoding);
            Ok((
                SerialSource {
                    name: bus.name.clone(),
                    bus: cfg,
                    engine,
                },
                catalog,
            ))
        }
        _ => Err(issues),
    }
}

fn device_rt(
    name: &str,
    dev: &SerialDevice,
    poll: Option<Duration>,
    encoding: Encoding,
) -> Result<DeviceRt, (String, String)> {
    let parser = dev.parser()?;
    let matcher = match &dev.line_match {
        Some(m) => Some(
            regex_lite::RegexBuilder::new(m)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ("match".to_string(), e.to_string()))?,
        ),
        None => None,
    };
    let points = dev
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| PointRt {
            name: Arc::from(p.common.name.as_str()),
            // A scaled value is in some other unit: then only the configured one applies.
            unit: p
                .common
                .unit
                .as_deref()
                .or_else(|| {
                    (!p.common.has_scaling())
                        .then(|| parser.natural_unit(i))
                        .flatten()
                })
                .map(Arc::from),
            ty: p.kind.ty.unwrap_or_else(|| parser.natural_type(i)),
            scale: p.common.scale,
            offset: p.common.offset,
        })
        .collect();
    let command = match (&dev.request, encoding) {
        (None, _) => Bytes::new(),
        (Some(r), Encoding::Utf8) => Bytes::from(r.command.clone().into_bytes()),
        // Each character is one byte, so `"\xB0"` in YAML sends the byte 0xB0.
        (Some(r), Encoding::Latin1) => r
            .command
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    (
                        "request.command".to_string(),
                        format!("{c:?} is not a Latin-1 character"),
                    )
                })
            })
            .collect::<Result<Vec<u8>, _>>()?
            .into(),
    };
    let poll = dev.request.as_ref().map(|r| PollRt {
        command: command.clone(),
        every: poll.unwrap_or(DEFAULT_POLL),
        timeout: r.timeout,
        lines: r.lines,
        offline_after: r.offline_after,
        next_due: None,
        misses: 0,
    });
    Ok(DeviceRt {
        name: Arc::from(name),
        parser,
        matcher,
        points,
        poll,
        online: None,
    })
}

/// One serial port and its devices.
pub struct SerialSource {
    name: String,
    bus: SerialBus,
    engine: Engine,
}

impl SerialSource {
    /// Live counters of this bus (lines, readings, garbage by reason, reopens).
    pub fn stats(&self) -> Arc<SerialStats> {
        self.engine.stats().clone()
    }
}

impl Source for SerialSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()> {
        async move {
            let SerialSource {
                name,
                bus,
                mut engine,
            } = *self;
            port::run(&name, &bus, &mut engine, &ctx).await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<SerialSource, String> {
        let cfg = Config::from_text(std::path::Path::new("t.yaml"), yaml, &|_| None)
            .map_err(|e| e.to_string())?;
        let devices: Vec<&DeviceSpec> = cfg.devices.iter().collect();
        build_source(&cfg.buses[0], &devices)
            .map(|(s, _)| s)
            .map_err(|e| format!("{e:?}"))
    }

    const DEVICE: &str = r#"
devices:
  - name: scale
    bus: s
    poll: 1s
    request: { command: "\x02W\xB0\r" }
    parser: { type: regex, pattern: '(?P<w>\d+)' }
    points: [{ name: w, field: w }]
"#;

    #[test]
    fn request_bytes_follow_the_encoding() {
        let head = "gateway: { id: t }\nbuses: [{ name: s, type: serial, port: /dev/ttyS0";
        let utf8 = build(&format!("{head} }}]{DEVICE}")).unwrap();
        let latin1 = build(&format!("{head}, encoding: latin1 }}]{DEVICE}")).unwrap();
        let cmd = |s: &SerialSource| {
            s.engine.devices()[0]
                .poll
                .as_ref()
                .map(|p| p.command.to_vec())
        };
        assert_eq!(cmd(&utf8), Some(b"\x02W\xC2\xB0\r".to_vec()));
        assert_eq!(cmd(&latin1), Some(b"\x02W\xB0\r".to_vec()));
        let err = build(&format!(
            "{head}, encoding: latin1 }}]{}",
            DEVICE.replace("\\xB0", "€")
        ))
        .err()
        .unwrap();
        assert!(err.contains("not a Latin-1 character"), "{err}");
    }
}
