//! The `serial` bus (one port and its line settings) and the devices on it (a parser, the
//! points it feeds, and optionally a request sent every poll interval).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use super::engine::Encoding;
use super::framer::Delimiter;
use super::parse::{Parser, ParserSpec, ValueType};
use crate::config::{Point, duration};

/// `buses: [{ type: serial, … }]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialBus {
    /// Device path; prefer `/dev/serial/by-id/…`, which survives re-plugging and reboots.
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// `"\n"` (a preceding `\r` is dropped too), `"\r\n"`, or any single byte: `";"`,
    /// `"\r"`, a number (`3`) or hex text (`"0x03"`).
    #[serde(default, deserialize_with = "delimiter")]
    pub delimiter: DelimiterSpec,
    /// Longest line kept; longer ones are dropped up to the next delimiter.
    #[serde(default = "default_max_line", with = "crate::config::bytesize")]
    pub max_line: u64,
    /// Silence after which a half-received line is dropped and streaming devices are
    /// reported offline (unset: silence is normal).
    #[serde(default, with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// First wait before reopening a lost port; doubles up to `reopen_backoff_max`.
    #[serde(default = "default_reopen", with = "duration")]
    pub reopen_backoff: Duration,
    #[serde(default = "default_reopen_max", with = "duration")]
    pub reopen_backoff_max: Duration,
    /// Lock the port against other openers (TIOCEXCL + flock).
    #[serde(default = "yes")]
    pub exclusive: bool,
    /// Text encoding of the lines. `latin1` for older instruments that print `°` as one
    /// byte (0xB0); with `utf8`, lines that are not valid UTF-8 are counted and skipped.
    #[serde(default)]
    pub encoding: Encoding,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_max_line() -> u64 {
    1024
}
fn default_reopen() -> Duration {
    Duration::from_secs(1)
}
fn default_reopen_max() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}

/// The largest `max_line` accepted: lines are held in memory whole.
pub const MAX_LINE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF
    Software,
    /// RTS/CTS
    Hardware,
}

/// A delimiter as configured (a newtype so it can have a default and a custom parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelimiterSpec(pub Delimiter);

impl Default for DelimiterSpec {
    fn default() -> Self {
        DelimiterSpec(Delimiter::Lf)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(i64),
    Text(String),
}

fn delimiter<'de, D: Deserializer<'de>>(d: D) -> Result<DelimiterSpec, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => u8::try_from(n)
            .map(byte_delimiter)
            .map_err(|_| format!("delimiter byte {n} is not in 0..=255")),
        NumOrText::Text(t) => parse_delimiter(&t),
    }
    .map(DelimiterSpec)
    .map_err(serde::de::Error::custom)
}

fn byte_delimiter(b: u8) -> Delimiter {
    if b == b'\n' {
        Delimiter::Lf
    } else {
        Delimiter::Byte(b)
    }
}

/// `"\n"`, `"\r\n"`, one ASCII character, `lf`/`crlf`/`cr`, or hex `0x03`.
pub fn parse_delimiter(t: &str) -> Result<Delimiter, String> {
    match t {
        "\n" | "lf" | "LF" | "\\n" => return Ok(Delimiter::Lf),
        "\r\n" | "crlf" | "CRLF" | "\\r\\n" => return Ok(Delimiter::CrLf),
        "\r" | "cr" | "CR" | "\\r" => return Ok(Delimiter::Byte(b'\r')),
        _ => {}
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u8::from_str_radix(hex, 16)
            .map(byte_delimiter)
            .map_err(|_| format!("invalid delimiter byte `{t}`"));
    }
    match t.as_bytes() {
        [b] if b.is_ascii() => Ok(byte_delimiter(*b)),
        _ => Err(format!(
            "invalid delimiter {t:?}: use \"\\n\", \"\\r\\n\", one ASCII character, or a byte such as 0x03"
        )),
    }
}

/// A device on a serial bus: `parser`, `points`, and optionally `match` and `request`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    pub parser: ParserSpec,
    /// Only lines matching this regular expression go to this device (for several
    /// devices sharing one line, or to skip banners and echoes).
    #[serde(default, rename = "match")]
    pub line_match: Option<String>,
    /// Ask for data instead of waiting for it: `command` is written every `poll`.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    pub points: Vec<Point<SerialPoint>>,
}

/// Request/response polling for sensors that answer only when asked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Bytes written, escapes included (`"R\r\n"`); YAML double quotes expand them.
    pub command: String,
    /// How long to wait for the reply lines.
    #[serde(default = "default_reply_timeout", with = "duration")]
    pub timeout: Duration,
    /// Reply lines to read per request.
    #[serde(default = "one")]
    pub lines: usize,
    /// Missed replies in a row before the device is reported offline.
    #[serde(default = "three")]
    pub offline_after: u32,
}

fn default_reply_timeout() -> Duration {
    Duration::from_secs(1)
}
fn one() -> usize {
    1
}
fn three() -> u32 {
    3
}

/// Poll interval when a device has a `request` but no `poll`.
pub const DEFAULT_POLL: Duration = Duration::from_secs(10);

/// The part of a point only serial devices have.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPoint {
    /// Where the value is in the line: an NMEA field (`latitude`, `RMC.speed_kmh`), a
    /// CSV column name, a JSON pointer (`/bme/t`), a key, or a capture name.
    pub field: String,
    /// Published type. Default: `float` for csv, kv and regex; the JSON value's own type
    /// for json; the field's type for nmea (`satellites` is an integer, `time` text …).
    #[serde(default, rename = "type")]
    pub ty: Option<ValueType>,
}

impl SerialBus {
    /// Semantic checks: (path suffix, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.port.trim().is_empty() {
            out.push(("port".into(), "port must not be empty".into()));
        }
        if self.baud == 0 || self.baud > 4_000_000 {
            out.push((
                "baud".into(),
                format!("baud {} is out of range (1..=4000000)", self.baud),
            ));
        }
        if !(5..=8).contains(&self.data_bits) {
            out.push((
                "data_bits".into(),
                format!("data_bits must be 5, 6, 7 or 8, got {}", self.data_bits),
            ));
        }
        if !(1..=2).contains(&self.stop_bits) {
            out.push((
                "stop_bits".into(),
                format!("stop_bits must be 1 or 2, got {}", self.stop_bits),
            ));
        }
        if self.max_line == 0 || self.max_line > MAX_LINE_LIMIT {
            out.push((
                "max_line".into(),
                format!(
                    "max_line must be between 1 B and 1 MiB, got {}",
                    self.max_line
                ),
            ));
        }
        if self.reopen_backoff.is_zero() {
            out.push((
                "reopen_backoff".into(),
                "reopen_backoff must be positive".into(),
            ));
        }
        if self.reopen_backoff_max < self.reopen_backoff {
            out.push((
                "reopen_backoff_max".into(),
                "reopen_backoff_max must be at least reopen_backoff".into(),
            ));
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            out.push((
                "idle_timeout".into(),
                "idle_timeout must be positive".into(),
            ));
        }
        out
    }
}

impl SerialDevice {
    /// Builds the parser for this device's points (the check also validates fields).
    pub fn parser(&self) -> Result<Parser, (String, String)> {
        let fields: Vec<&str> = self.points.iter().map(|p| p.kind.field.as_str()).collect();
        Parser::build(&self.parser, &fields).map_err(|(i, msg)| {
            if i == usize::MAX {
                ("parser".to_string(), msg)
            } else {
                (format!("points[{i}].field"), msg)
            }
        })
    }

    /// Semantic checks: (path suffix, message). `poll` is the device header's interval.
    pub fn validate(&self, poll: Option<Duration>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.points.is_empty() {
            out.push((
                "points".into(),
                "a serial device needs at least one point".into(),
            ));
        }
        if let Err(e) = self.parser() {
            out.push(e);
        }
        if let Some(m) = &self.line_match
            && let Err(e) = regex_lite::RegexBuilder::new(m).size_limit(1 << 20).build()
        {
            out.push(("match".into(), format!("invalid regular expression: {e}")));
        }
        match &self.request {
            Some(r) => {
                if r.command.is_empty() {
                    out.push(("request.command".into(), "command must not be empty".into()));
                }
                if r.timeout.is_zero() {
                    out.push(("request.timeout".into(), "timeout must be positive".into()));
                }
                if !(1..=64).contains(&r.lines) {
                    out.push((
                        "request.lines".into(),
                        format!("lines must be 1..=64, got {}", r.lines),
                    ));
                }
                if r.offline_after == 0 {
                    out.push((
                        "request.offline_after".into(),
                        "offline_after must be at least 1".into(),
                    ));
                }
                let every = poll.unwrap_or(DEFAULT_POLL);
                if every < r.timeout {
                    out.push((
                        "request.timeout".into(),
                        format!("timeout must not exceed the poll interval ({every:?})"),
                    ));
                }
            }
            None if poll.is_some() => {
                out.push((
                    "poll".into(),
                    "poll needs a `request` to send; streaming devices are read as lines arrive"
                        .into(),
                ));
            }
            None => {}
        }
        for (i, p) in self.points.iter().enumerate() {
            if p.common.writable {
                out.push((
                    format!("points[{i}].writable"),
                    "serial points are read-only".into(),
                ));
            }
            if p.kind.ty == Some(ValueType::Text) && p.common.has_scaling() {
                out.push((
                    format!("points[{i}].scale"),
                    "scale/offset do not apply to text points".into(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Path, parse};

    #[test]
    fn bus_defaults_and_delimiters() {
        let b: SerialBus =
            parse(&serde_json::json!({"port": "/dev/ttyUSB0"}), &Path::root()).unwrap();
        assert_eq!(
            (b.baud, b.data_bits, b.stop_bits, b.parity),
            (9600, 8, 1, Parity::None)
        );
        assert_eq!(b.delimiter.0, Delimiter::Lf);
        assert_eq!(b.max_line, 1024);
        assert!(b.validate().is_empty());
        for (v, want) in [
            (serde_json::json!("\r\n"), Delimiter::CrLf),
            (serde_json::json!("\r"), Delimiter::Byte(b'\r')),
            (serde_json::json!(";"), Delimiter::Byte(b';')),
            (serde_json::json!(3), Delimiter::Byte(3)),
            (serde_json::json!("0x0a"), Delimiter::Lf),
            (serde_json::json!("crlf"), Delimiter::CrLf),
        ] {
            let b: SerialBus = parse(
                &serde_json::json!({"port": "p", "delimiter": v}),
                &Path::root(),
            )
            .unwrap();
            assert_eq!(b.delimiter.0, want, "{v}");
        }
        for bad in [
            serde_json::json!("ab"),
            serde_json::json!(300),
            serde_json::json!("0xzz"),
        ] {
            let e = parse::<SerialBus>(
                &serde_json::json!({"port": "p", "delimiter": bad}),
                &Path::root(),
            )
            .unwrap_err();
            assert_eq!(e.path.to_string(), "delimiter");
        }
    }

    #[test]
    fn bus_validation() {
        let b: SerialBus = parse(
            &serde_json::json!({"port": "p", "data_bits": 9, "stop_bits": 3, "max_line": "2MiB", "baud": 0}),
            &Path::root(),
        )
        .unwrap();
        let keys: Vec<String> = b.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["baud", "data_bits", "stop_bits", "max_line"]);
        let e = parse::<SerialBus>(
            &serde_json::json!({"port": "p", "parity": "mark"}),
            &Path::root(),
        )
        .unwrap_err();
        assert_eq!(e.path.to_string(), "parity");
    }

    #[test]
    fn device_parses_and_validates() {
        let d: SerialDevice = parse(
            &serde_json::json!({
                "parser": {"type": "csv", "columns": ["t", "h"], "separator": ";"},
                "request": {"command": "R\r\n", "timeout": "500ms"},
                "points": [{"name": "temp", "field": "t", "unit": "°C"}, {"name": "hum", "field": "x", "type": "uint"}]
            }),
            &Path::root(),
        )
        .unwrap();
        assert_eq!(d.points[1].kind.ty, Some(ValueType::Uint));
        assert_eq!(
            d.request.as_ref().map(|r| r.timeout),
            Some(Duration::from_millis(500))
        );
        let v = d.validate(None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "points[1].field");
        assert!(v[0].1.contains("no column named `x`"), "{}", v[0].1);
    }

    #[test]
    fn parser_shorthand_and_nested_error_paths() {
        let d: SerialDevice = parse(
            &serde_json::json!({"parser": "nmea", "points": [{"name": "a", "field": "latitude"}]}),
            &Path::root(),
        )
        .unwrap();
        assert_eq!(d.parser, ParserSpec::Nmea(Default::default()));
        let e = parse::<SerialDevice>(
            &serde_json::json!({"parser": "csv", "points": []}),
            &Path::root().key("devices").index(0),
        )
        .unwrap_err();
        assert!(e.message.contains("columns"), "{}", e.message);
        assert_eq!(e.path.to_string(), "devices[0].parser");
        let e = parse::<SerialDevice>(
            &serde_json::json!({"parser": {"type": "csv", "columns": [1]}, "points": []}),
            &Path::root(),
        )
        .unwrap_err();
        assert_eq!(e.path.to_string(), "parser.columns[0]");
    }

    #[test]
    fn device_errors_point_at_the_key() {
        let e = parse::<SerialDevice>(
            &serde_json::json!({"parser": {"type": "nmea", "checksum": false}, "points": []}),
            &Path::root(),
        )
        .unwrap_err();
        assert!(
            e.message.contains("unknown field `checksum`"),
            "{}",
            e.message
        );
        let e = parse::<SerialDevice>(
            &serde_json::json!({"parser": {"type": "xml"}, "points": []}),
            &Path::root(),
        )
        .unwrap_err();
        assert!(e.message.contains("xml"), "{}", e.message);
        let d: SerialDevice = parse(
            &serde_json::json!({"parser": {"type": "kv"}, "match": "(", "points": [{"name": "a", "field": "a"}]}),
            &Path::root(),
        )
        .unwrap();
        let v = d.validate(Some(Duration::from_secs(5)));
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["match", "poll"]);
        let d: SerialDevice = parse(
            &serde_json::json!({"parser": "kv", "points": [
                {"name": "a", "field": "a", "writable": true},
                {"name": "b", "field": "b", "type": "text", "scale": 2}
            ]}),
            &Path::root(),
        )
        .unwrap();
        let keys: Vec<String> = d.validate(None).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["points[0].writable", "points[1].scale"]);
    }
}
