//! Device-map types for Modbus buses, devices and points, their checks, and the resolved
//! form the bus task runs on.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::codec::{DataType, WordOrder};
use super::plan::{Limits, MAX_BITS, MAX_REGISTERS, Span, Table};
use crate::config::point::split_mapping;
use crate::config::{DeviceCommon, Point, PointCommon};

/// Bus `type:` values handled here.
pub const BUS_TYPES: &[&str] = &["modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp"];

/// A bus mapping (after `name` and `type`): timing keys shared by all transports, plus
/// the transport's own keys (`T`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bus<T> {
    pub timing: Timing,
    pub transport: T,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Bus<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (timing, transport) =
            split_mapping::<Timing, T, D::Error>(serde_json::Map::deserialize(d)?, Timing::FIELDS)?;
        Ok(Bus { timing, transport })
    }
}

/// How the bus task paces and guards requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Per request; tokio-modbus has none of its own.
    #[serde(default = "d_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Extra attempts of a failed request. A retry after a timeout is queued behind the
    /// other due slaves, so a silent slave costs them at most one timeout at a time.
    #[serde(default = "d_retries")]
    pub retries: u8,
    /// Pause between two requests (on RTU added to the 3.5-character silence).
    #[serde(default, with = "crate::config::duration")]
    pub delay: Duration,
    /// Extra pause before talking to a different unit id (slow RS-485 transceivers).
    #[serde(default, with = "crate::config::duration")]
    pub slave_switch_delay: Duration,
    #[serde(default = "d_connect", with = "crate::config::duration")]
    pub connect_timeout: Duration,
    /// First and longest wait between reconnect attempts (doubling in between).
    #[serde(default = "d_reconnect_min", with = "crate::config::duration")]
    pub reconnect_min: Duration,
    #[serde(default = "d_reconnect_max", with = "crate::config::duration")]
    pub reconnect_max: Duration,
    /// Longest skip interval of a slave that stopped answering.
    #[serde(default = "d_backoff_max", with = "crate::config::duration")]
    pub backoff_max: Duration,
}

impl Timing {
    pub const FIELDS: &'static [&'static str] = &[
        "timeout",
        "retries",
        "delay",
        "slave_switch_delay",
        "connect_timeout",
        "reconnect_min",
        "reconnect_max",
        "backoff_max",
    ];
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            timeout: d_timeout(),
            retries: d_retries(),
            delay: Duration::ZERO,
            slave_switch_delay: Duration::ZERO,
            connect_timeout: d_connect(),
            reconnect_min: d_reconnect_min(),
            reconnect_max: d_reconnect_max(),
            backoff_max: d_backoff_max(),
        }
    }
}

fn d_timeout() -> Duration {
    Duration::from_secs(1)
}
fn d_retries() -> u8 {
    1
}
fn d_connect() -> Duration {
    Duration::from_secs(3)
}
fn d_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn d_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn d_backoff_max() -> Duration {
    Duration::from_secs(60)
}

/// `modbus-tcp` and `modbus-rtu-over-tcp`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTransport {
    pub host: String,
    #[serde(default = "d_port")]
    pub port: u16,
}

fn d_port() -> u16 {
    502
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// `modbus-rtu` on a serial port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuTransport {
    pub port: String,
    #[serde(default = "d_baud")]
    pub baud: u32,
    #[serde(default = "d_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "d_stop_bits")]
    pub stop_bits: u8,
}

fn d_baud() -> u32 {
    9600
}
fn d_data_bits() -> u8 {
    8
}
fn d_stop_bits() -> u8 {
    1
}

impl RtuTransport {
    /// Bits on the wire per character: start + data + parity + stop.
    pub fn char_bits(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The silent interval that ends an RTU frame. The spec fixes 1.75 ms above 19200 baud.
    pub fn silent_interval(&self) -> Duration {
        if self.baud > 19_200 || self.baud == 0 {
            return Duration::from_micros(1750);
        }
        Duration::from_nanos(3_500_000_000u64 * u64::from(self.char_bits()) / u64::from(self.baud))
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.port.is_empty() {
            out.push(("port".into(), "serial port must not be empty".into()));
        }
        if !(300..=4_000_000).contains(&self.baud) {
            out.push((
                "baud".into(),
                format!("baud {} is outside 300..=4000000", self.baud),
            ));
        }
        if !(5..=8).contains(&self.data_bits) {
            out.push(("data_bits".into(), "data_bits must be 5, 6, 7 or 8".into()));
        }
        if !(1..=2).contains(&self.stop_bits) {
            out.push(("stop_bits".into(), "stop_bits must be 1 or 2".into()));
        }
        out
    }
}

/// Where a bus connects.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Tcp(TcpTransport),
    RtuOverTcp(TcpTransport),
    Rtu(RtuTransport),
}

impl Transport {
    pub fn is_rtu_framing(&self) -> bool {
        !matches!(self, Transport::Tcp(_))
    }
}

impl Timing {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.timeout.is_zero() {
            out.push(("timeout".into(), "timeout must be above 0".into()));
        }
        if self.retries > 10 {
            out.push(("retries".into(), "at most 10 retries".into()));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            out.push((
                "reconnect_max".into(),
                "need 0 < reconnect_min <= reconnect_max".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            out.push((
                "connect_timeout".into(),
                "connect_timeout must be above 0".into(),
            ));
        }
        out
    }
}

/// The device mapping after the shared header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Unit id (slave address). RTU: 1..=247; TCP devices often use 1 or 255.
    #[serde(default = "d_unit")]
    pub unit: u8,
    /// Per-device request timeout (default: the bus's).
    #[serde(default, with = "crate::config::duration::option")]
    pub timeout: Option<Duration>,
    /// Largest read this device accepts (registers / bits).
    #[serde(default)]
    pub max_registers: Option<u16>,
    #[serde(default)]
    pub max_bits: Option<u16>,
    /// Largest run of unmapped registers (bits) a merged read may span; 0 for devices that
    /// refuse reads across holes.
    #[serde(default)]
    pub max_gap: Option<u16>,
    #[serde(default)]
    pub max_bit_gap: Option<u16>,
    /// Default byte order of this device's points.
    #[serde(default)]
    pub order: Option<WordOrder>,
    /// Apply a retained `set` message found at start (default: ignore it).
    #[serde(default)]
    pub apply_retained: bool,
    /// Write with FC 15/16 even for one coil/register (devices without FC 5/6).
    #[serde(default)]
    pub write_multiple: bool,
    #[serde(default)]
    pub points: Vec<Point<ModbusPoint>>,
}

fn d_unit() -> u8 {
    1
}

/// The Modbus part of a point mapping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPoint {
    /// coil, discrete_input, holding, input.
    pub register: Table,
    /// Protocol address, 0-based (register 40001 is holding address 0).
    pub address: u16,
    /// Default: bool for coils and discrete inputs, u16 for registers.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    #[serde(default)]
    pub order: Option<WordOrder>,
    /// A single bit (0 = least significant) of a holding or input register.
    #[serde(default)]
    pub bit: Option<u8>,
    /// String length in registers.
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub apply_retained: Option<bool>,
}

impl ModbusPoint {
    pub fn data_type(&self) -> DataType {
        match (self.data_type, self.bit) {
            (Some(t), _) => t,
            (None, Some(_)) => DataType::Bool,
            (None, None) if self.register.is_bits() => DataType::Bool,
            (None, None) => DataType::U16,
        }
    }

    /// Registers (or bits) the point occupies.
    pub fn count(&self) -> u16 {
        if self.register.is_bits() || self.bit.is_some() {
            1
        } else {
            self.data_type().registers(self.length.unwrap_or(0))
        }
    }
}

impl ModbusDevice {
    /// Semantic checks; each issue is (path below the device, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let max_regs = self.max_registers.unwrap_or(MAX_REGISTERS);
        if !(1..=MAX_REGISTERS).contains(&max_regs) {
            out.push((
                "max_registers".into(),
                format!("max_registers must be 1..={MAX_REGISTERS}"),
            ));
        }
        if let Some(b) = self.max_bits
            && !(1..=MAX_BITS).contains(&b)
        {
            out.push((
                "max_bits".into(),
                format!("max_bits must be 1..={MAX_BITS}"),
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            out.push(("timeout".into(), "timeout must be above 0".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.points.iter().enumerate() {
            let at = |k: &str| format!("points[{i}].{k}");
            let (c, k) = (&p.common, &p.kind);
            if !names.insert(c.name.as_str()) {
                out.push((at("name"), format!("duplicate point name `{}`", c.name)));
            }
            let ty = k.data_type();
            if k.register.is_bits() && ty != DataType::Bool {
                out.push((
                    at("type"),
                    format!(
                        "`{}` points are bool; `type` must be bool",
                        k.register.name()
                    ),
                ));
            }
            if let Some(bit) = k.bit {
                if k.register.is_bits() {
                    out.push((
                        at("bit"),
                        "`bit` applies to holding and input registers only".into(),
                    ));
                }
                if bit > 15 {
                    out.push((at("bit"), format!("bit {bit} is outside 0..=15")));
                }
                if ty != DataType::Bool {
                    out.push((at("type"), "a bit point is bool".into()));
                }
            }
            match (ty, k.length) {
                (DataType::String, None) => {
                    out.push((at("length"), "a string needs `length` (registers)".into()))
                }
                (DataType::String, Some(0)) => {
                    out.push((at("length"), "length must be at least 1".into()))
                }
                (DataType::String, Some(_)) => {}
                (_, Some(_)) => out.push((at("length"), "`length` applies to strings only".into())),
                _ => {}
            }
            let n = k.count();
            let limit = if k.register.is_bits() {
                MAX_BITS
            } else {
                max_regs
            };
            if n > limit {
                out.push((
                    at("length"),
                    format!("point spans {n} registers, more than the {limit} of one read"),
                ));
            }
            if u32::from(k.address) + u32::from(n) > 65536 {
                out.push((at("address"), "point runs past address 65535".into()));
            }
            if c.has_scaling() && matches!(ty, DataType::String | DataType::Bool) {
                out.push((at("scale"), "scale/offset apply to numbers only".into()));
            }
            if c.writable {
                if matches!(k.register, Table::Input | Table::DiscreteInput) {
                    out.push((
                        at("writable"),
                        format!("`{}` points are read-only", k.register.name()),
                    ));
                }
                if c.scale == Some(0.0) {
                    out.push((
                        at("scale"),
                        "a writable point needs a non-zero scale".into(),
                    ));
                }
            }
        }
        out
    }

    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_registers: self.max_registers.unwrap_or(d.max_registers),
            max_bits: self.max_bits.unwrap_or(d.max_bits),
            max_gap: self.max_gap.unwrap_or(d.max_gap),
            max_bit_gap: self.max_bit_gap.unwrap_or(d.max_bit_gap),
        }
    }
}

/// A point ready for the bus task.
#[derive(Debug, Clone)]
pub struct PointSpec {
    pub name: Arc<str>,
    pub span: Span,
    pub data_type: DataType,
    pub order: WordOrder,
    pub bit: Option<u8>,
    pub unit: Option<Arc<str>>,
    pub common: PointCommon,
    pub writable: bool,
    pub apply_retained: bool,
}

/// A device ready for the bus task.
#[derive(Debug, Clone)]
pub struct DeviceRt {
    pub name: Arc<str>,
    pub unit: u8,
    pub poll: Duration,
    pub timeout: Duration,
    pub limits: Limits,
    pub write_multiple: bool,
    pub points: Vec<PointSpec>,
}

/// Default poll interval when the device has none.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

impl DeviceRt {
    pub fn resolve(common: &DeviceCommon, dev: &ModbusDevice, timing: &Timing) -> DeviceRt {
        let default_order = dev.order.unwrap_or_default();
        let points = dev
            .points
            .iter()
            .map(|p| PointSpec {
                name: Arc::from(p.common.name.as_str()),
                span: Span {
                    table: p.kind.register,
                    address: p.kind.address,
                    count: p.kind.count(),
                },
                data_type: p.kind.data_type(),
                order: p.kind.order.unwrap_or(default_order),
                bit: p.kind.bit,
                unit: p.common.unit.as_deref().map(Arc::from),
                common: p.common.clone(),
                writable: p.common.writable,
                apply_retained: p.kind.apply_retained.unwrap_or(dev.apply_retained),
            })
            .collect();
        DeviceRt {
            name: Arc::from(common.name.as_str()),
            unit: dev.unit,
            poll: common
                .poll
                .unwrap_or(DEFAULT_POLL)
                .max(Duration::from_millis(1)),
            timeout: dev.timeout.unwrap_or(timing.timeout),
            limits: dev.limits(),
            write_multiple: dev.write_multiple,
            points,
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.points.iter().map(|p| p.span).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(points: serde_json::Value) -> ModbusDevice {
        serde_json::from_value(serde_json::json!({ "unit": 3, "points": points })).unwrap()
    }

    #[test]
    fn parses_points_with_defaults() {
        let d = dev(serde_json::json!([
            {"name": "v", "register": "input", "address": 0, "type": "f32", "unit": "V"},
            {"name": "relay", "register": "coil", "address": 4, "writable": true},
            {"name": "alarm", "register": "holding", "address": 9, "bit": 3},
            {"name": "model", "register": "holding", "address": 100, "type": "string", "length": 8, "order": "BADC"},
        ]));
        assert_eq!(d.unit, 3);
        assert!(d.validate().is_empty(), "{:?}", d.validate());
        assert_eq!(d.points[0].kind.count(), 2);
        assert_eq!(d.points[1].kind.data_type(), DataType::Bool);
        assert_eq!(d.points[2].kind.data_type(), DataType::Bool);
        assert_eq!(d.points[2].kind.count(), 1);
        assert_eq!(d.points[3].kind.count(), 8);
        assert_eq!(d.points[3].kind.order, Some(WordOrder::BADC));
    }

    #[test]
    fn rejects_unknown_keys() {
        let r: Result<ModbusDevice, _> =
            serde_json::from_value(serde_json::json!({"unit": 1, "slave": 2}));
        assert!(r.unwrap_err().to_string().contains("unknown field `slave`"));
    }

    #[test]
    fn validation_messages() {
        let d = dev(serde_json::json!([
            {"name": "a", "register": "coil", "address": 0, "type": "u16"},
            {"name": "a", "register": "input", "address": 0, "writable": true},
            {"name": "s", "register": "holding", "address": 0, "type": "string"},
            {"name": "t", "register": "holding", "address": 65535, "type": "u32"},
            {"name": "b", "register": "holding", "address": 0, "bit": 16},
            {"name": "l", "register": "holding", "address": 0, "type": "string", "length": 126},
            {"name": "x", "register": "holding", "address": 0, "type": "f32", "length": 2},
            {"name": "y", "register": "holding", "address": 0, "type": "string", "length": 2, "scale": 2.0},
            {"name": "z", "register": "holding", "address": 0, "writable": true, "scale": 0.0},
        ]));
        let issues = d.validate();
        let paths: Vec<&str> = issues.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "points[0].type",
                "points[1].name",
                "points[1].writable",
                "points[2].length",
                "points[3].address",
                "points[4].bit",
                "points[5].length",
                "points[6].length",
                "points[7].scale",
                "points[8].scale",
            ],
            "{issues:?}"
        );
    }

    #[test]
    fn rtu_silent_interval() {
        let mut t = RtuTransport {
            port: "/dev/x".into(),
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
        };
        // 3.5 chars * 10 bits / 9600 baud = 3.646 ms
        assert_eq!(t.silent_interval(), Duration::from_nanos(3_645_833));
        t.parity = Parity::Even;
        assert_eq!(t.char_bits(), 11);
        assert_eq!(t.silent_interval(), Duration::from_nanos(4_010_416));
        t.baud = 115_200;
        assert_eq!(t.silent_interval(), Duration::from_micros(1750));
        assert!(t.validate().is_empty());
        t.data_bits = 9;
        assert_eq!(t.validate().len(), 1);
    }

    #[test]
    fn bus_splits_timing_and_transport() {
        let b: Bus<TcpTransport> = serde_json::from_value(
            serde_json::json!({"host": "10.0.0.5", "timeout": "250ms", "retries": 2}),
        )
        .unwrap();
        assert_eq!(
            b.transport,
            TcpTransport {
                host: "10.0.0.5".into(),
                port: 502
            }
        );
        assert_eq!(b.timing.timeout, Duration::from_millis(250));
        assert_eq!(b.timing.retries, 2);
        let bad: Result<Bus<RtuTransport>, _> =
            serde_json::from_value(serde_json::json!({"port": "/dev/x", "host": "y"}));
        assert!(bad.is_err());
    }
}
