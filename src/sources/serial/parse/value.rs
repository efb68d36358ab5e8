//! Raw field values and their conversion to a point's configured type, scale and offset.

use serde::Deserialize;

/// A field as a parser found it, before the point's type and scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Text(String),
}

/// The type a point's value is published as (`type:` on a point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Numbers as floats (JSON integers stay integers), `true`/`false` as booleans,
    /// anything else as text.
    #[default]
    Auto,
    #[serde(alias = "f64", alias = "number")]
    Float,
    #[serde(alias = "i64", alias = "integer")]
    Int,
    #[serde(alias = "u64", alias = "unsigned")]
    Uint,
    #[serde(alias = "boolean")]
    Bool,
    #[serde(alias = "string")]
    Text,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("{0:?} is not a number")]
    NotNumber(String),
    #[error("{0} is not finite")]
    NotFinite(f64),
    #[error("{0} is out of range for {1}")]
    OutOfRange(f64, &'static str),
    #[error("{0:?} is not a boolean")]
    NotBool(String),
}

/// Converts a raw field to the point's type. `scale`/`offset` (value = raw × scale +
/// offset) apply to numbers; a scaled `auto` value is a float, a scaled `int`/`uint`
/// value is rounded. Non-finite numbers (Arduino prints `nan` for a failed sensor read)
/// are errors, not readings.
pub fn convert(
    raw: Raw,
    ty: ValueType,
    scale: Option<f64>,
    offset: Option<f64>,
) -> Result<Raw, ConvertError> {
    let scaled = scale.is_some() || offset.is_some();
    let apply = |x: f64| x * scale.unwrap_or(1.0) + offset.unwrap_or(0.0);
    match ty {
        ValueType::Text => Ok(Raw::Text(match raw {
            Raw::Text(s) => s,
            Raw::Float(f) => f.to_string(),
            Raw::Int(i) => i.to_string(),
            Raw::UInt(u) => u.to_string(),
            Raw::Bool(b) => b.to_string(),
        })),
        ValueType::Bool => match raw {
            Raw::Bool(b) => Ok(Raw::Bool(b)),
            Raw::Int(i) => Ok(Raw::Bool(i != 0)),
            Raw::UInt(u) => Ok(Raw::Bool(u != 0)),
            Raw::Float(f) => Ok(Raw::Bool(f != 0.0)),
            Raw::Text(s) => parse_bool(&s)
                .map(Raw::Bool)
                .ok_or(ConvertError::NotBool(s)),
        },
        ValueType::Float => {
            let x = number(&raw)?;
            finite(apply(x)).map(Raw::Float)
        }
        ValueType::Int => {
            if !scaled {
                match &raw {
                    Raw::Int(i) => return Ok(Raw::Int(*i)),
                    Raw::UInt(u) => {
                        return i64::try_from(*u)
                            .map(Raw::Int)
                            .map_err(|_| ConvertError::OutOfRange(*u as f64, "int"));
                    }
                    Raw::Text(s) => {
                        if let Ok(i) = s.trim().parse::<i64>() {
                            return Ok(Raw::Int(i));
                        }
                    }
                    _ => {}
                }
            }
            let x = finite(apply(number(&raw)?))?.round();
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x) {
                Ok(Raw::Int(x as i64))
            } else {
                Err(ConvertError::OutOfRange(x, "int"))
            }
        }
        ValueType::Uint => {
            if !scaled {
                match &raw {
                    Raw::UInt(u) => return Ok(Raw::UInt(*u)),
                    Raw::Int(i) => {
                        return u64::try_from(*i)
                            .map(Raw::UInt)
                            .map_err(|_| ConvertError::OutOfRange(*i as f64, "uint"));
                    }
                    Raw::Text(s) => {
                        if let Ok(u) = s.trim().parse::<u64>() {
                            return Ok(Raw::UInt(u));
                        }
                    }
                    _ => {}
                }
            }
            let x = finite(apply(number(&raw)?))?.round();
            if (0.0..1.844_674_407_370_955_2e19).contains(&x) {
                Ok(Raw::UInt(x as u64))
            } else {
                Err(ConvertError::OutOfRange(x, "uint"))
            }
        }
        ValueType::Auto => match raw {
            Raw::Text(s) => {
                let t = s.trim();
                if let Some(b) = parse_bool_word(t) {
                    Ok(Raw::Bool(b))
                } else if let Some(x) = parse_float(t) {
                    finite(apply(x)).map(Raw::Float)
                } else if t.parse::<f64>().is_ok() {
                    // `nan`, `inf`: a sensor reporting a failed read.
                    Err(ConvertError::NotFinite(f64::NAN))
                } else {
                    Ok(Raw::Text(s))
                }
            }
            Raw::Float(f) => finite(apply(f)).map(Raw::Float),
            Raw::Int(i) if scaled => finite(apply(i as f64)).map(Raw::Float),
            Raw::UInt(u) if scaled => finite(apply(u as f64)).map(Raw::Float),
            other => Ok(other),
        },
    }
}

fn finite(x: f64) -> Result<f64, ConvertError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(ConvertError::NotFinite(x))
    }
}

fn number(raw: &Raw) -> Result<f64, ConvertError> {
    match raw {
        Raw::Float(f) => finite(*f),
        Raw::Int(i) => Ok(*i as f64),
        Raw::UInt(u) => Ok(*u as f64),
        Raw::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Raw::Text(s) => match s.trim().parse::<f64>() {
            Ok(x) => finite(x),
            Err(_) => Err(ConvertError::NotNumber(s.clone())),
        },
    }
}

/// A finite decimal number (not `nan`/`inf`, which Rust's parser accepts).
fn parse_float(t: &str) -> Option<f64> {
    let x: f64 = t.parse().ok()?;
    x.is_finite().then_some(x)
}

fn parse_bool_word(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    let t = t.trim();
    parse_bool_word(t).or(match t {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Raw {
        Raw::Text(s.into())
    }

    #[test]
    fn auto_types_text() {
        assert_eq!(
            convert(t("21.5"), ValueType::Auto, None, None),
            Ok(Raw::Float(21.5))
        );
        assert_eq!(
            convert(t(" 40 "), ValueType::Auto, None, None),
            Ok(Raw::Float(40.0))
        );
        assert_eq!(
            convert(t("ON"), ValueType::Auto, None, None),
            Ok(Raw::Bool(true))
        );
        assert_eq!(
            convert(t("idle"), ValueType::Auto, None, None),
            Ok(Raw::Text("idle".into()))
        );
        assert!(matches!(
            convert(t("nan"), ValueType::Auto, None, None),
            Err(ConvertError::NotFinite(_))
        ));
        assert!(matches!(
            convert(t("-inf"), ValueType::Auto, None, None),
            Err(ConvertError::NotFinite(_))
        ));
        assert_eq!(
            convert(Raw::Int(7), ValueType::Auto, None, None),
            Ok(Raw::Int(7))
        );
        assert_eq!(
            convert(Raw::Int(7), ValueType::Auto, Some(0.5), None),
            Ok(Raw::Float(3.5))
        );
    }

    #[test]
    fn scale_and_offset() {
        assert_eq!(
            convert(t("523"), ValueType::Float, Some(0.1), Some(-40.0)),
            Ok(Raw::Float(523.0 * 0.1 - 40.0))
        );
        assert_eq!(
            convert(t("523"), ValueType::Int, Some(0.1), None),
            Ok(Raw::Int(52))
        );
        assert_eq!(
            convert(t("-3"), ValueType::Uint, None, Some(10.0)),
            Ok(Raw::UInt(7))
        );
    }

    #[test]
    fn integers_keep_precision() {
        assert_eq!(
            convert(t("18446744073709551615"), ValueType::Uint, None, None),
            Ok(Raw::UInt(u64::MAX))
        );
        assert_eq!(
            convert(t("-9223372036854775808"), ValueType::Int, None, None),
            Ok(Raw::Int(i64::MIN))
        );
        assert!(convert(t("-1"), ValueType::Uint, None, None).is_err());
        assert!(convert(Raw::UInt(u64::MAX), ValueType::Int, None, None).is_err());
        assert!(convert(t("1e30"), ValueType::Int, None, None).is_err());
        assert_eq!(
            convert(t("2.6"), ValueType::Int, None, None),
            Ok(Raw::Int(3))
        );
    }

    #[test]
    fn bools_and_text() {
        assert_eq!(
            convert(t("1"), ValueType::Bool, None, None),
            Ok(Raw::Bool(true))
        );
        assert_eq!(
            convert(t("off"), ValueType::Bool, None, None),
            Ok(Raw::Bool(false))
        );
        assert!(convert(t("maybe"), ValueType::Bool, None, None).is_err());
        assert_eq!(
            convert(Raw::Float(1.5), ValueType::Text, None, None),
            Ok(Raw::Text("1.5".into()))
        );
        assert!(convert(t("abc"), ValueType::Float, None, None).is_err());
    }
}
