//! What a source observed: one value of one point of one device, at one time.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A typed value. Integers keep their signedness so a u64 counter never loses precision
/// through a float.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// Numeric view used by deadband filters; `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }

    /// JSON form for payloads. Non-finite floats have no JSON form and become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// How far a value can be trusted. `Bad` readings are still published (with the flag) so a
/// dashboard shows the failure instead of a stale number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    #[default]
    Good,
    Bad,
    Uncertain,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Uncertain => "uncertain",
        }
    }
}

/// One observation. Device and point names are shared `Arc<str>` because a source emits the
/// same names thousands of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub value: Value,
    pub unit: Option<Arc<str>>,
    pub ts: SystemTime,
    pub quality: Quality,
}

impl Reading {
    /// A good reading taken now.
    pub fn new(device: impl Into<Arc<str>>, point: impl Into<Arc<str>>, value: Value) -> Self {
        Reading {
            device: device.into(),
            point: point.into(),
            value,
            unit: None,
            ts: SystemTime::now(),
            quality: Quality::Good,
        }
    }

    pub fn with_unit(mut self, unit: Option<Arc<str>>) -> Self {
        self.unit = unit;
        self
    }

    pub fn with_quality(mut self, quality: Quality) -> Self {
        self.quality = quality;
        self
    }

    pub fn with_ts(mut self, ts: SystemTime) -> Self {
        self.ts = ts;
        self
    }
}
