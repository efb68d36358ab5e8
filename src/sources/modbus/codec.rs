//! Register codec: Modbus words <-> typed values, in every word/byte order.
//!
//! Pure functions only. Decoding never panics on short input (it returns an error), and
//! encoding validates range and type so a bad `set` payload is refused before it reaches
//! the wire.

use serde::Deserialize;

/// Data type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Text over `length` registers, two bytes per register, trailing NULs and spaces trimmed.
    String,
}

impl DataType {
    /// Registers this type spans (`len` is the string length in registers).
    pub fn registers(self, len: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => len,
        }
    }
}

/// Byte order of a multi-register value, named after the bytes of a 32-bit value `A B C D`
/// (A most significant) as they appear on the wire. The same rule extends to 64 bits:
/// `CDAB` puts the least significant word first, `BADC` swaps the bytes inside each word,
/// `DCBA` does both (fully little-endian). For 16-bit values only the byte swap matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum WordOrder {
    #[default]
    #[serde(alias = "abcd", alias = "big")]
    ABCD,
    #[serde(alias = "cdab", alias = "word_swap")]
    CDAB,
    #[serde(alias = "badc", alias = "byte_swap")]
    BADC,
    #[serde(alias = "dcba", alias = "little")]
    DCBA,
}

impl WordOrder {
    fn swap_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
    fn swap_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
}

/// A decoded raw value, before scale/offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Raw {
    /// Numeric view for scaling; `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Raw::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Raw::Int(v) => Some(*v as f64),
            Raw::UInt(v) => Some(*v as f64),
            Raw::Float(v) => Some(*v),
            Raw::Text(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("need {need} registers, got {got}")]
    Short { need: usize, got: usize },
    #[error("bit {0} is outside a 16-bit register")]
    BadBit(u8),
    #[error("value {value} is out of range for {ty:?}")]
    OutOfRange { value: String, ty: DataType },
    #[error("{ty:?} needs an integer, got {value}")]
    NotInteger { value: String, ty: DataType },
    #[error("expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: String },
    #[error("text of {len} bytes does not fit in {regs} registers")]
    TextTooLong { len: usize, regs: u16 },
}

/// Puts `regs` (as read, wire order) into big-endian byte order `A B C D …`.
fn to_be_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let mut words: Vec<u16> = regs.to_vec();
    if order.swap_words() {
        words.reverse();
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for w in words {
        let w = if order.swap_bytes() {
            w.swap_bytes()
        } else {
            w
        };
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

/// Inverse of [`to_be_bytes`]: big-endian bytes to registers in wire order.
fn from_be_bytes(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            if order.swap_bytes() {
                w.swap_bytes()
            } else {
                w
            }
        })
        .collect();
    if order.swap_words() {
        words.reverse();
    }
    words
}

fn take<const N: usize>(regs: &[u16], order: WordOrder) -> Result<[u8; N], CodecError> {
    let need = N / 2;
    if regs.len() < need {
        return Err(CodecError::Short {
            need,
            got: regs.len(),
        });
    }
    let bytes = to_be_bytes(&regs[..need], order);
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Decodes a register value of type `ty` from `regs` (starting at the point's address).
pub fn decode_registers(
    regs: &[u16],
    ty: DataType,
    order: WordOrder,
    bit: Option<u8>,
) -> Result<Raw, CodecError> {
    if let Some(bit) = bit {
        if bit > 15 {
            return Err(CodecError::BadBit(bit));
        }
        let w = *regs.first().ok_or(CodecError::Short { need: 1, got: 0 })?;
        return Ok(Raw::Bool(w >> bit & 1 == 1));
    }
    Ok(match ty {
        DataType::Bool => Raw::Bool(u16::from_be_bytes(take::<2>(regs, order)?) != 0),
        DataType::U16 => Raw::UInt(u16::from_be_bytes(take::<2>(regs, order)?).into()),
        DataType::I16 => Raw::Int(i16::from_be_bytes(take::<2>(regs, order)?).into()),
        DataType::U32 => Raw::UInt(u32::from_be_bytes(take::<4>(regs, order)?).into()),
        DataType::I32 => Raw::Int(i32::from_be_bytes(take::<4>(regs, order)?).into()),
        DataType::U64 => Raw::UInt(u64::from_be_bytes(take::<8>(regs, order)?)),
        DataType::I64 => Raw::Int(i64::from_be_bytes(take::<8>(regs, order)?)),
        DataType::F32 => Raw::Float(f32::from_be_bytes(take::<4>(regs, order)?).into()),
        DataType::F64 => Raw::Float(f64::from_be_bytes(take::<8>(regs, order)?)),
        DataType::String => {
            // Strings have no word order: only the byte order inside each register counts.
            let mut bytes = Vec::with_capacity(regs.len() * 2);
            for w in regs {
                let w = if order.swap_bytes() {
                    w.swap_bytes()
                } else {
                    *w
                };
                bytes.extend_from_slice(&w.to_be_bytes());
            }
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            let text = String::from_utf8_lossy(&bytes[..end]);
            Raw::Text(text.trim_end().to_string())
        }
    })
}

/// A value to write, as parsed from a `set` payload (already unscaled by the caller).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

fn fmt_num(v: f64) -> String {
    format!("{v}")
}

/// Converts a number to an integer of the given bounds: rounds only when `round` (scaled
/// values land between integers), else demands an exact integer.
fn to_int(v: f64, ty: DataType, min: f64, max: f64, round: bool) -> Result<i128, CodecError> {
    if !v.is_finite() {
        return Err(CodecError::OutOfRange {
            value: fmt_num(v),
            ty,
        });
    }
    let r = if round { v.round() } else { v };
    if r.fract() != 0.0 {
        return Err(CodecError::NotInteger {
            value: fmt_num(v),
            ty,
        });
    }
    if r < min || r > max {
        return Err(CodecError::OutOfRange {
            value: fmt_num(v),
            ty,
        });
    }
    Ok(r as i128)
}

/// Encodes a value of type `ty` into registers in wire order.
///
/// `round` allows rounding a fractional number to the nearest integer (used after the
/// inverse scale); without it a fractional number for an integer type is refused.
/// Integers beyond 2^53 cannot be written exactly through an f64 and are refused by range.
pub fn encode_registers(
    value: &WriteValue,
    ty: DataType,
    order: WordOrder,
    len: u16,
    round: bool,
) -> Result<Vec<u16>, CodecError> {
    let num = |v: &WriteValue| -> Result<f64, CodecError> {
        match v {
            WriteValue::Number(n) => Ok(*n),
            WriteValue::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            WriteValue::Text(t) => Err(CodecError::WrongType {
                expected: "a number",
                got: format!("{t:?}"),
            }),
        }
    };
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let regs = match ty {
        DataType::Bool => match value {
            WriteValue::Bool(b) => vec![u16::from(*b)],
            WriteValue::Number(n) if *n == 0.0 || *n == 1.0 => vec![u16::from(*n == 1.0)],
            other => {
                return Err(CodecError::WrongType {
                    expected: "true/false",
                    got: format!("{other:?}"),
                });
            }
        },
        DataType::U16 => {
            let v = to_int(num(value)?, ty, 0.0, u16::MAX as f64, round)? as u16;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::I16 => {
            let v = to_int(num(value)?, ty, i16::MIN as f64, i16::MAX as f64, round)? as i16;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::U32 => {
            let v = to_int(num(value)?, ty, 0.0, u32::MAX as f64, round)? as u32;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::I32 => {
            let v = to_int(num(value)?, ty, i32::MIN as f64, i32::MAX as f64, round)? as i32;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::U64 => {
            let v = to_int(num(value)?, ty, 0.0, EXACT, round)? as u64;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::I64 => {
            let v = to_int(num(value)?, ty, -EXACT, EXACT, round)? as i64;
            from_be_bytes(&v.to_be_bytes(), order)
        }
        DataType::F32 => {
            let n = num(value)?;
            if !n.is_finite() || n.abs() > f32::MAX as f64 {
                return Err(CodecError::OutOfRange {
                    value: fmt_num(n),
                    ty,
                });
            }
            from_be_bytes(&(n as f32).to_be_bytes(), order)
        }
        DataType::F64 => {
            let n = num(value)?;
            if !n.is_finite() {
                return Err(CodecError::OutOfRange {
                    value: fmt_num(n),
                    ty,
                });
            }
            from_be_bytes(&n.to_be_bytes(), order)
        }
        DataType::String => {
            let WriteValue::Text(t) = value else {
                return Err(CodecError::WrongType {
                    expected: "text",
                    got: format!("{value:?}"),
                });
            };
            let bytes = t.as_bytes();
            if bytes.len() > usize::from(len) * 2 {
                return Err(CodecError::TextTooLong {
                    len: bytes.len(),
                    regs: len,
                });
            }
            let mut padded = bytes.to_vec();
            padded.resize(usize::from(len) * 2, 0);
            padded
                .chunks(2)
                .map(|c| {
                    let w = u16::from_be_bytes([c[0], c[1]]);
                    if order.swap_bytes() {
                        w.swap_bytes()
                    } else {
                        w
                    }
                })
                .collect()
        }
    };
    Ok(regs)
}

/// Sets or clears `bit` in `word` (read-modify-write of a bit point).
pub fn set_bit(word: u16, bit: u8, on: bool) -> Result<u16, CodecError> {
    if bit > 15 {
        return Err(CodecError::BadBit(bit));
    }
    Ok(if on {
        word | 1 << bit
    } else {
        word & !(1 << bit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    fn dec(regs: &[u16], ty: DataType, o: WordOrder) -> Raw {
        decode_registers(regs, ty, o, None).unwrap()
    }

    #[test]
    fn u32_in_every_order() {
        // 0x11223344: A=11 B=22 C=33 D=44
        assert_eq!(dec(&[0x1122, 0x3344], U32, ABCD), Raw::UInt(0x1122_3344));
        assert_eq!(dec(&[0x3344, 0x1122], U32, CDAB), Raw::UInt(0x1122_3344));
        assert_eq!(dec(&[0x2211, 0x4433], U32, BADC), Raw::UInt(0x1122_3344));
        assert_eq!(dec(&[0x4433, 0x2211], U32, DCBA), Raw::UInt(0x1122_3344));
    }

    #[test]
    fn u64_in_every_order() {
        let v = 0x1122_3344_5566_7788u64;
        assert_eq!(
            dec(&[0x1122, 0x3344, 0x5566, 0x7788], U64, ABCD),
            Raw::UInt(v)
        );
        assert_eq!(
            dec(&[0x7788, 0x5566, 0x3344, 0x1122], U64, CDAB),
            Raw::UInt(v)
        );
        assert_eq!(
            dec(&[0x2211, 0x4433, 0x6655, 0x8877], U64, BADC),
            Raw::UInt(v)
        );
        assert_eq!(
            dec(&[0x8877, 0x6655, 0x4433, 0x2211], U64, DCBA),
            Raw::UInt(v)
        );
    }

    #[test]
    fn signed_and_float() {
        assert_eq!(dec(&[0xFFFE], I16, ABCD), Raw::Int(-2));
        assert_eq!(dec(&[0xFEFF], I16, BADC), Raw::Int(-2));
        assert_eq!(dec(&[0xFFFE], U16, ABCD), Raw::UInt(65534));
        assert_eq!(dec(&[0xFFFF, 0xFFFD], I32, ABCD), Raw::Int(-3));
        assert_eq!(
            dec(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFC], I64, ABCD),
            Raw::Int(-4)
        );
        // 230.5f32 = 0x43668000
        assert_eq!(dec(&[0x4366, 0x8000], F32, ABCD), Raw::Float(230.5));
        assert_eq!(dec(&[0x8000, 0x4366], F32, CDAB), Raw::Float(230.5));
        assert_eq!(dec(&[0x6643, 0x0080], F32, BADC), Raw::Float(230.5));
        assert_eq!(dec(&[0x0080, 0x6643], F32, DCBA), Raw::Float(230.5));
        // -1.5f64 = 0xBFF8000000000000
        assert_eq!(dec(&[0xBFF8, 0, 0, 0], F64, ABCD), Raw::Float(-1.5));
        assert_eq!(dec(&[0, 0, 0, 0xBFF8], F64, CDAB), Raw::Float(-1.5));
        assert_eq!(dec(&[1], Bool, ABCD), Raw::Bool(true));
        assert_eq!(dec(&[0], Bool, ABCD), Raw::Bool(false));
    }

    #[test]
    fn strings_and_bits() {
        // "SDM630" + NUL padding
        let regs = [0x5344, 0x4D36, 0x3330, 0x0000];
        assert_eq!(dec(&regs, String, ABCD), Raw::Text("SDM630".into()));
        let swapped: Vec<u16> = regs.iter().map(|w| w.swap_bytes()).collect();
        assert_eq!(dec(&swapped, String, BADC), Raw::Text("SDM630".into()));
        assert_eq!(dec(&[0x4142, 0x2020], String, ABCD), Raw::Text("AB".into()));
        assert_eq!(dec(&[0xFF41], String, ABCD), Raw::Text("\u{FFFD}A".into()));
        let b = |bit| decode_registers(&[0b1000_0000_0000_0101], U16, ABCD, Some(bit)).unwrap();
        assert_eq!(b(0), Raw::Bool(true));
        assert_eq!(b(1), Raw::Bool(false));
        assert_eq!(b(2), Raw::Bool(true));
        assert_eq!(b(15), Raw::Bool(true));
        assert_eq!(
            decode_registers(&[1], U16, ABCD, Some(16)),
            Err(CodecError::BadBit(16))
        );
    }

    #[test]
    fn short_input_is_an_error() {
        assert_eq!(
            decode_registers(&[1], F32, ABCD, None),
            Err(CodecError::Short { need: 2, got: 1 })
        );
        assert_eq!(
            decode_registers(&[], U16, ABCD, None),
            Err(CodecError::Short { need: 1, got: 0 })
        );
        assert_eq!(
            decode_registers(&[], U16, ABCD, Some(1)),
            Err(CodecError::Short { need: 1, got: 0 })
        );
        assert_eq!(
            decode_registers(&[1, 2, 3], F64, CDAB, None),
            Err(CodecError::Short { need: 4, got: 3 })
        );
    }

    #[test]
    fn encode_round_trips_every_type_and_order() {
        let cases: Vec<(DataType, WriteValue, Raw)> = vec![
            (U16, WriteValue::Number(65535.0), Raw::UInt(65535)),
            (I16, WriteValue::Number(-32768.0), Raw::Int(-32768)),
            (
                U32,
                WriteValue::Number(4_000_000_000.0),
                Raw::UInt(4_000_000_000),
            ),
            (
                I32,
                WriteValue::Number(-2_000_000_000.0),
                Raw::Int(-2_000_000_000),
            ),
            (
                U64,
                WriteValue::Number(9_007_199_254_740_992.0),
                Raw::UInt(1 << 53),
            ),
            (
                I64,
                WriteValue::Number(-123_456_789_012.0),
                Raw::Int(-123_456_789_012),
            ),
            (F32, WriteValue::Number(-0.15625), Raw::Float(-0.15625)),
            (F64, WriteValue::Number(1e300), Raw::Float(1e300)),
            (Bool, WriteValue::Bool(true), Raw::Bool(true)),
        ];
        for order in [ABCD, CDAB, BADC, DCBA] {
            for (ty, w, want) in &cases {
                let regs = encode_registers(w, *ty, order, 0, false).unwrap();
                assert_eq!(regs.len(), usize::from(ty.registers(0)), "{ty:?}");
                assert_eq!(&dec(&regs, *ty, order), want, "{ty:?} {order:?}");
            }
            let regs =
                encode_registers(&WriteValue::Text("hi!".into()), String, order, 3, false).unwrap();
            assert_eq!(regs.len(), 3);
            assert_eq!(dec(&regs, String, order), Raw::Text("hi!".into()));
        }
    }

    #[test]
    fn encode_wire_layout() {
        let e = |o| encode_registers(&WriteValue::Number(230.5), F32, o, 0, false).unwrap();
        assert_eq!(e(ABCD), vec![0x4366, 0x8000]);
        assert_eq!(e(CDAB), vec![0x8000, 0x4366]);
        assert_eq!(e(BADC), vec![0x6643, 0x0080]);
        assert_eq!(e(DCBA), vec![0x0080, 0x6643]);
    }

    #[test]
    fn encode_validates() {
        let e = |v: WriteValue, ty, round| encode_registers(&v, ty, ABCD, 2, round);
        assert!(matches!(
            e(WriteValue::Number(65536.0), U16, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(-1.0), U16, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(32768.0), I16, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(1.5), I32, false),
            Err(CodecError::NotInteger { .. })
        ));
        assert_eq!(e(WriteValue::Number(1.5), I32, true).unwrap(), vec![0, 2]);
        assert_eq!(
            e(WriteValue::Number(-1.4), I16, true).unwrap(),
            vec![0xFFFF]
        );
        assert!(matches!(
            e(WriteValue::Number(f64::NAN), F32, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(1e39), F32, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(2e16), U64, false),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            e(WriteValue::Text("x".into()), U16, false),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(2.0), Bool, false),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            e(WriteValue::Number(1.0), String, false),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            e(WriteValue::Text("hello".into()), String, false),
            Err(CodecError::TextTooLong { .. })
        ));
        assert_eq!(e(WriteValue::Bool(true), U16, false).unwrap(), vec![1]);
    }

    #[test]
    fn bits() {
        assert_eq!(set_bit(0, 3, true), Ok(8));
        assert_eq!(set_bit(0xFFFF, 15, false), Ok(0x7FFF));
        assert_eq!(set_bit(0, 16, true), Err(CodecError::BadBit(16)));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn ty() -> impl Strategy<Value = DataType> {
            prop::sample::select(vec![
                DataType::Bool,
                DataType::U16,
                DataType::I16,
                DataType::U32,
                DataType::I32,
                DataType::U64,
                DataType::I64,
                DataType::F32,
                DataType::F64,
                DataType::String,
            ])
        }

        fn order() -> impl Strategy<Value = WordOrder> {
            prop::sample::select(vec![
                WordOrder::ABCD,
                WordOrder::CDAB,
                WordOrder::BADC,
                WordOrder::DCBA,
            ])
        }

        proptest! {
            /// Whatever a device sends, decoding returns a value or an error.
            #[test]
            fn decode_never_panics(regs in prop::collection::vec(any::<u16>(), 0..10), t in ty(), o in order(), bit in prop::option::of(0u8..20)) {
                let _ = decode_registers(&regs, t, o, bit);
            }

            #[test]
            fn integers_round_trip(v in -(1i64 << 53)..(1i64 << 53), o in order()) {
                let regs = encode_registers(&WriteValue::Number(v as f64), DataType::I64, o, 0, false).unwrap();
                prop_assert_eq!(decode_registers(&regs, DataType::I64, o, None).unwrap(), Raw::Int(v));
                let v32 = (v % (1 << 31)) as i32;
                let regs = encode_registers(&WriteValue::Number(f64::from(v32)), DataType::I32, o, 0, false).unwrap();
                prop_assert_eq!(decode_registers(&regs, DataType::I32, o, None).unwrap(), Raw::Int(i64::from(v32)));
            }

            #[test]
            fn floats_round_trip(bits in any::<u64>(), o in order()) {
                let f = f64::from_bits(bits);
                prop_assume!(f.is_finite());
                let regs = encode_registers(&WriteValue::Number(f), DataType::F64, o, 0, false).unwrap();
                prop_assert_eq!(decode_registers(&regs, DataType::F64, o, None).unwrap(), Raw::Float(f));
                let g = f32::from_bits(bits as u32);
                prop_assume!(g.is_finite());
                let regs = encode_registers(&WriteValue::Number(f64::from(g)), DataType::F32, o, 0, false).unwrap();
                prop_assert_eq!(decode_registers(&regs, DataType::F32, o, None).unwrap(), Raw::Float(f64::from(g)));
            }
        }
    }
}
