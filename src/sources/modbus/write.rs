//! Writes from `…/set` commands: payload parsing, inverse scaling, encoding and the choice
//! of function code. Pure; the bus task performs the returned [`WriteOp`].

use bytes::Bytes;

use super::codec::{CodecError, DataType, WriteValue, encode_registers};
use super::config::PointSpec;
use super::plan::Table;

/// What goes on the wire for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// FC 5, or FC 15 with `multiple`.
    Coil {
        address: u16,
        on: bool,
        multiple: bool,
    },
    /// FC 6 for one register, FC 16 for more (or with `multiple`).
    Registers {
        address: u16,
        words: Vec<u16>,
        multiple: bool,
    },
    /// Read-modify-write of one bit of a holding register (FC 3, then FC 6/16).
    Bit {
        address: u16,
        bit: u8,
        on: bool,
        multiple: bool,
    },
}

impl WriteOp {
    pub fn function_code(&self) -> u8 {
        match self {
            WriteOp::Coil {
                multiple: false, ..
            } => 5,
            WriteOp::Coil { multiple: true, .. } => 15,
            WriteOp::Registers {
                words, multiple, ..
            } if words.len() == 1 && !multiple => 6,
            WriteOp::Registers { .. } => 16,
            WriteOp::Bit {
                multiple: false, ..
            } => 6,
            WriteOp::Bit { multiple: true, .. } => 16,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WriteError {
    #[error("point is not writable")]
    NotWritable,
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is empty")]
    Empty,
    #[error("payload is too large ({0} bytes)")]
    TooLarge(usize),
    #[error("unsupported JSON payload: {0}")]
    BadJson(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Bounds the parse work for a hostile payload; a 125-register string is 250 bytes.
pub const MAX_PAYLOAD: usize = 1024;

/// Accepts `21.5`, `true`, `"text"`, `{"value": 21.5}`, and bare text such as `on`/`off`.
pub fn parse_payload(payload: &Bytes) -> Result<WriteValue, WriteError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WriteError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| WriteError::NotUtf8)?
        .trim();
    if text.is_empty() {
        return Err(WriteError::Empty);
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let json = match json {
            serde_json::Value::Object(mut m) => m
                .remove("value")
                .ok_or_else(|| WriteError::BadJson(text.into()))?,
            other => other,
        };
        return match json {
            serde_json::Value::Bool(b) => Ok(WriteValue::Bool(b)),
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(WriteValue::Number)
                .ok_or(WriteError::BadJson(text.into())),
            serde_json::Value::String(s) => Ok(WriteValue::Text(s)),
            _ => Err(WriteError::BadJson(text.into())),
        };
    }
    Ok(match text.to_ascii_lowercase().as_str() {
        "true" | "on" => WriteValue::Bool(true),
        "false" | "off" => WriteValue::Bool(false),
        _ => WriteValue::Text(text.to_string()),
    })
}

/// Turns a parsed value into the write for `point`, applying the inverse scale.
pub fn prepare(
    point: &PointSpec,
    value: &WriteValue,
    write_multiple: bool,
) -> Result<WriteOp, WriteError> {
    if !point.writable || matches!(point.span.table, Table::Input | Table::DiscreteInput) {
        return Err(WriteError::NotWritable);
    }
    let address = point.span.address;
    let as_bool = |v: &WriteValue| -> Result<bool, WriteError> {
        match v {
            WriteValue::Bool(b) => Ok(*b),
            WriteValue::Number(n) if *n == 0.0 || *n == 1.0 => Ok(*n == 1.0),
            other => Err(CodecError::WrongType {
                expected: "true/false",
                got: format!("{other:?}"),
            }
            .into()),
        }
    };
    if point.span.table == Table::Coil {
        return Ok(WriteOp::Coil {
            address,
            on: as_bool(value)?,
            multiple: write_multiple,
        });
    }
    if let Some(bit) = point.bit {
        return Ok(WriteOp::Bit {
            address,
            bit,
            on: as_bool(value)?,
            multiple: write_multiple,
        });
    }
    // Text like "21.5" from a bare payload is a number for numeric points.
    let value = match (value, point.data_type) {
        (WriteValue::Text(t), ty) if ty != DataType::String => match t.parse::<f64>() {
            Ok(n) => WriteValue::Number(n),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    };
    let scaled = point.common.has_scaling();
    let raw = match value {
        WriteValue::Number(n) if scaled => WriteValue::Number(point.common.unapply_scale(n)),
        other => other,
    };
    let words = encode_registers(&raw, point.data_type, point.order, point.span.count, scaled)?;
    Ok(WriteOp::Registers {
        address,
        words,
        multiple: write_multiple,
    })
}

/// The JSON published on `{device}/{point}/set/result`.
pub fn result_payload(outcome: &Result<(), String>, request: &Bytes) -> Bytes {
    let req = String::from_utf8_lossy(&request[..request.len().min(MAX_PAYLOAD)]).into_owned();
    let v = match outcome {
        Ok(()) => serde_json::json!({ "ok": true, "request": req }),
        Err(e) => serde_json::json!({ "ok": false, "error": e, "request": req }),
    };
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PointCommon;
    use crate::sources::modbus::codec::WordOrder;
    use crate::sources::modbus::plan::Span;
    use std::sync::Arc;

    fn point(
        table: Table,
        ty: DataType,
        count: u16,
        scale: Option<f64>,
        bit: Option<u8>,
    ) -> PointSpec {
        PointSpec {
            name: Arc::from("p"),
            span: Span {
                table,
                address: 40,
                count,
            },
            data_type: ty,
            order: WordOrder::CDAB,
            bit,
            unit: None,
            common: PointCommon {
                name: "p".into(),
                scale,
                writable: true,
                ..Default::default()
            },
            writable: true,
            apply_retained: false,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn payload_forms() {
        assert_eq!(parse_payload(&b("21.5")), Ok(WriteValue::Number(21.5)));
        assert_eq!(parse_payload(&b(" true ")), Ok(WriteValue::Bool(true)));
        assert_eq!(parse_payload(&b("ON")), Ok(WriteValue::Bool(true)));
        assert_eq!(parse_payload(&b("off")), Ok(WriteValue::Bool(false)));
        assert_eq!(
            parse_payload(&b(r#"{"value": -3}"#)),
            Ok(WriteValue::Number(-3.0))
        );
        assert_eq!(
            parse_payload(&b(r#""abc""#)),
            Ok(WriteValue::Text("abc".into()))
        );
        assert_eq!(
            parse_payload(&b("hello")),
            Ok(WriteValue::Text("hello".into()))
        );
        assert_eq!(parse_payload(&b("")), Err(WriteError::Empty));
        assert_eq!(
            parse_payload(&Bytes::from_static(&[0xff, 0xfe])),
            Err(WriteError::NotUtf8)
        );
        assert!(matches!(
            parse_payload(&b(r#"{"v": 1}"#)),
            Err(WriteError::BadJson(_))
        ));
        assert!(matches!(
            parse_payload(&b("[1]")),
            Err(WriteError::BadJson(_))
        ));
        assert!(matches!(
            parse_payload(&Bytes::from(vec![b'1'; 2000])),
            Err(WriteError::TooLarge(2000))
        ));
    }

    #[test]
    fn function_codes() {
        let coil = point(Table::Coil, DataType::Bool, 1, None, None);
        assert_eq!(
            prepare(&coil, &WriteValue::Bool(true), false)
                .unwrap()
                .function_code(),
            5
        );
        assert_eq!(
            prepare(&coil, &WriteValue::Number(0.0), true)
                .unwrap()
                .function_code(),
            15
        );
        let reg = point(Table::Holding, DataType::U16, 1, None, None);
        assert_eq!(
            prepare(&reg, &WriteValue::Number(7.0), false)
                .unwrap()
                .function_code(),
            6
        );
        assert_eq!(
            prepare(&reg, &WriteValue::Number(7.0), true)
                .unwrap()
                .function_code(),
            16
        );
        let f = point(Table::Holding, DataType::F32, 2, None, None);
        let op = prepare(&f, &WriteValue::Number(230.5), false).unwrap();
        assert_eq!(
            op,
            WriteOp::Registers {
                address: 40,
                words: vec![0x8000, 0x4366],
                multiple: false
            }
        );
        assert_eq!(op.function_code(), 16);
        let bit = point(Table::Holding, DataType::Bool, 1, None, Some(3));
        assert_eq!(
            prepare(&bit, &WriteValue::Bool(true), false).unwrap(),
            WriteOp::Bit {
                address: 40,
                bit: 3,
                on: true,
                multiple: false
            }
        );
    }

    #[test]
    fn inverse_scale_and_validation() {
        // value = raw * 0.1 -> 21.5 writes raw 215
        let p = point(Table::Holding, DataType::I16, 1, Some(0.1), None);
        assert_eq!(
            prepare(&p, &WriteValue::Number(21.5), false).unwrap(),
            WriteOp::Registers {
                address: 40,
                words: vec![215],
                multiple: false
            }
        );
        assert_eq!(
            prepare(&p, &WriteValue::Text("-1.25".into()), false).unwrap(),
            WriteOp::Registers {
                address: 40,
                words: vec![(-13i16) as u16],
                multiple: false
            }
        );
        assert!(prepare(&p, &WriteValue::Number(4000.0), false).is_err());
        let u = point(Table::Holding, DataType::U16, 1, None, None);
        assert!(matches!(
            prepare(&u, &WriteValue::Number(1.5), false),
            Err(WriteError::Codec(CodecError::NotInteger { .. }))
        ));
        assert!(matches!(
            prepare(&u, &WriteValue::Text("abc".into()), false),
            Err(WriteError::Codec(_))
        ));
        let coil = point(Table::Coil, DataType::Bool, 1, None, None);
        assert!(prepare(&coil, &WriteValue::Number(2.0), false).is_err());
        let mut ro = point(Table::Input, DataType::U16, 1, None, None);
        assert_eq!(
            prepare(&ro, &WriteValue::Number(1.0), false),
            Err(WriteError::NotWritable)
        );
        ro.span.table = Table::Holding;
        ro.writable = false;
        assert_eq!(
            prepare(&ro, &WriteValue::Number(1.0), false),
            Err(WriteError::NotWritable)
        );
    }

    #[test]
    fn result_json() {
        let ok = result_payload(&Ok(()), &b("5"));
        assert_eq!(&ok[..], br#"{"ok":true,"request":"5"}"#);
        let err = result_payload(&Err("exception: Illegal data value".into()), &b("5"));
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "exception: Illegal data value");
    }

    proptest::proptest! {
        /// Any payload bytes parse to a value or an error, never a panic.
        #[test]
        fn payload_parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_payload(&Bytes::from(bytes));
        }
    }
}
