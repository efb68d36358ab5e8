//! RuuviTag data format 5 ("RAWv2"), manufacturer data of company 0x0499.
//! Spec: <https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-5-rawv2>.
//! Every field has an "invalid / not available" code; such fields are left out.

use std::borrow::Cow;

use super::{DecodeError, Decoded, Measurement, Value, i16be, mac_from_be, u16be};

/// Decodes the bytes after the company id (first byte is the format, 5).
pub fn decode_v5(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.first() != Some(&5) {
        return Err(DecodeError::NotThisFormat);
    }
    if d.len() < 24 {
        return Err(DecodeError::TooShort(d.len()));
    }
    let mut m = Vec::new();
    let (Some(t), Some(h), Some(p)) = (i16be(d, 1), u16be(d, 3), u16be(d, 5)) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    if t != i16::MIN {
        m.push(Measurement::float(
            "temperature",
            f64::from(t) * 0.005,
            "°C",
        ));
    }
    if h != u16::MAX {
        m.push(Measurement::float("humidity", f64::from(h) * 0.0025, "%"));
    }
    if p != u16::MAX {
        m.push(Measurement::float(
            "pressure",
            (f64::from(p) + 50_000.0) / 100.0,
            "hPa",
        ));
    }
    for (name, at) in [
        ("acceleration_x", 7),
        ("acceleration_y", 9),
        ("acceleration_z", 11),
    ] {
        if let Some(a) = i16be(d, at).filter(|&a| a != i16::MIN) {
            m.push(Measurement::int(name, i64::from(a), Some("mg")));
        }
    }
    let power = u16be(d, 13).unwrap_or(u16::MAX);
    if power >> 5 != 0x7FF {
        m.push(Measurement::float(
            "voltage",
            f64::from((power >> 5) + 1600) / 1000.0,
            "V",
        ));
    }
    if power & 0x1F != 0x1F {
        m.push(Measurement::int(
            "tx_power",
            i64::from(power & 0x1F) * 2 - 40,
            Some("dBm"),
        ));
    }
    if d[15] != 0xFF {
        m.push(Measurement::new(
            "movement_counter",
            Value::UInt(u64::from(d[15])),
            None,
        ));
    }
    let seq = u16be(d, 16).unwrap_or(u16::MAX);
    let mut out = Decoded {
        model: Some(Cow::Borrowed("RuuviTag RAWv2")),
        ..Default::default()
    };
    if seq != u16::MAX {
        m.push(Measurement::new(
            "measurement_sequence",
            Value::UInt(u64::from(seq)),
            None,
        ));
        out.packet_id = Some(u32::from(seq));
    }
    let mac = mac_from_be(&d[18..24]);
    if let Some(mac) = mac.filter(|m| m.0 != [0xFF; 6]) {
        m.push(Measurement::text("mac", mac.to_string()));
        out.embedded_mac = Some(mac);
    }
    out.measurements = m;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_other_formats_and_short_frames() {
        assert_eq!(decode_v5(&[3, 1, 2]), Err(DecodeError::NotThisFormat));
        assert_eq!(decode_v5(&[]), Err(DecodeError::NotThisFormat));
        assert_eq!(decode_v5(&[5; 23]), Err(DecodeError::TooShort(23)));
    }

    #[test]
    fn voltage_invalid_but_tx_valid() {
        // power info 0xFFE0: voltage all ones (invalid), tx code 0 -> -40 dBm
        let d = hex::decode("058000ffffffff800080008000ffe0ffffffffffffffffff").unwrap();
        let r = decode_v5(&d).unwrap();
        assert_eq!(
            r.measurements,
            vec![Measurement::int("tx_power", -40, Some("dBm"))]
        );
        assert_eq!(r.packet_id, None);
    }
}
