//! Line parsers: a text line in, one optional raw value per configured point out. Pure:
//! no I/O, no clocks, so every protocol detail is unit-tested with literal lines.
//!
//! A parser is built once from its options and the list of point fields; unknown fields
//! are rejected then (at config check), so parsing a line is only lookups.

pub mod csv;
pub mod json;
pub mod kv;
pub mod nmea;
pub mod regex;
pub mod value;

use serde::Deserialize;

pub use value::{Raw, ValueType, convert};

/// Which parser a device uses, with its options: `parser: { type: csv, … }`, or just
/// `parser: nmea` for a parser without required options.
#[derive(Debug, Clone, PartialEq)]
pub enum ParserSpec {
    /// NMEA 0183 sentences (GGA, RMC, GLL, VTG, GSA).
    Nmea(nmea::NmeaOptions),
    /// Separated values with named columns.
    Csv(csv::CsvOptions),
    /// One JSON document per line; points are picked by JSON pointer.
    Json(json::JsonOptions),
    /// `key=value` pairs.
    Kv(kv::KvOptions),
    /// A regular expression with named captures.
    Regex(regex::RegexOptions),
}

impl<'de> Deserialize<'de> for ParserSpec {
    /// By hand rather than `#[serde(tag = "type")]`, which buffers the mapping and so loses
    /// the path of an error inside the options (`parser.columns[0]`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        fn options<T: serde::de::DeserializeOwned, E: Error>(v: serde_json::Value) -> Result<T, E> {
            serde_path_to_error::deserialize(v).map_err(crate::config::issue::nested_error::<E>)
        }
        let mut map = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => {
                serde_json::Map::from_iter([("type".to_string(), name.into())])
            }
            serde_json::Value::Object(m) => m,
            _ => {
                return Err(D::Error::custom(
                    "expected a parser name (`nmea`) or a mapping with `type`",
                ));
            }
        };
        let kind = match map.remove("type") {
            Some(serde_json::Value::String(k)) => k,
            Some(_) => return Err(D::Error::custom("parser `type` must be text")),
            None => return Err(D::Error::missing_field("type")),
        };
        let rest = serde_json::Value::Object(map);
        Ok(match kind.as_str() {
            "nmea" => ParserSpec::Nmea(options(rest)?),
            "csv" => ParserSpec::Csv(options(rest)?),
            "json" => ParserSpec::Json(options(rest)?),
            "kv" => ParserSpec::Kv(options(rest)?),
            "regex" => ParserSpec::Regex(options(rest)?),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown parser `{other}` (known: nmea, csv, json, kv, regex)"
                )));
            }
        })
    }
}

impl ParserSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ParserSpec::Nmea(_) => "nmea",
            ParserSpec::Csv(_) => "csv",
            ParserSpec::Json(_) => "json",
            ParserSpec::Kv(_) => "kv",
            ParserSpec::Regex(_) => "regex",
        }
    }
}

/// Why a line was rejected. The variant name is the `reason` label of the garbage counter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("bad checksum: line says {expected:02X}, computed {computed:02X}")]
    Checksum { expected: u8, computed: u8 },
    #[error("malformed line: {0}")]
    Malformed(String),
    #[error("line does not match the pattern")]
    NoMatch,
}

impl ParseError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Checksum { .. } => "checksum",
            ParseError::Malformed(_) => "malformed",
            ParseError::NoMatch => "no_match",
        }
    }
}

/// What a parser made of a well-formed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// One entry per point, in the order the fields were given; `None` where this line
    /// does not carry the point (an RMC sentence has no altitude, a JSON key is absent).
    Fields(Vec<Option<Raw>>),
    /// A valid line this device has no use for (e.g. an NMEA GSV sentence).
    Ignored,
}

/// A configured parser, ready for lines.
#[derive(Debug, Clone)]
pub enum Parser {
    Nmea(nmea::Nmea),
    Csv(csv::Csv),
    Json(json::Json),
    Kv(kv::Kv),
    Regex(regex::Re),
}

/// A point field the parser cannot provide: (index of the field, message).
pub type BuildError = (usize, String);

impl Parser {
    /// Builds a parser for these point fields. Errors name the offending field's index so
    /// config checks can point at `points[i].field`; an error about the options
    /// themselves uses `usize::MAX`.
    pub fn build(spec: &ParserSpec, fields: &[&str]) -> Result<Parser, BuildError> {
        Ok(match spec {
            ParserSpec::Nmea(o) => Parser::Nmea(nmea::Nmea::build(o, fields)?),
            ParserSpec::Csv(o) => Parser::Csv(csv::Csv::build(o, fields)?),
            ParserSpec::Json(o) => Parser::Json(json::Json::build(o, fields)?),
            ParserSpec::Kv(o) => Parser::Kv(kv::Kv::build(o, fields)?),
            ParserSpec::Regex(o) => Parser::Regex(regex::Re::build(o, fields)?),
        })
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        match self {
            Parser::Nmea(p) => p.parse(line),
            Parser::Csv(p) => p.parse(line),
            Parser::Json(p) => p.parse(line),
            Parser::Kv(p) => p.parse(line),
            Parser::Regex(p) => p.parse(line),
        }
    }

    /// The unit a point gets when its config names none (NMEA fields have fixed units).
    pub fn natural_unit(&self, field_index: usize) -> Option<&'static str> {
        match self {
            Parser::Nmea(p) => p.natural_unit(field_index),
            _ => None,
        }
    }

    /// The type a point gets when its config names none. Text formats default to numbers
    /// so that a stray header or banner line cannot turn a number point into text.
    pub fn natural_type(&self, field_index: usize) -> ValueType {
        match self {
            Parser::Nmea(p) => p.natural_type(field_index),
            Parser::Json(_) => ValueType::Auto,
            Parser::Csv(_) | Parser::Kv(_) | Parser::Regex(_) => ValueType::Float,
        }
    }
}

/// Error message for an options problem (not tied to one field).
pub(crate) fn options_error(msg: impl Into<String>) -> BuildError {
    (usize::MAX, msg.into())
}

/// Reads a one-character separator option.
pub(crate) fn single_char(what: &str, s: &str) -> Result<char, BuildError> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(options_error(format!(
            "{what} must be exactly one character, got {s:?}"
        ))),
    }
}
