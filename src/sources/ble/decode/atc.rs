//! Custom firmware for Xiaomi LYWSD03MMC-family thermometers (service data 0x181A):
//! the original ATC1441 format (13 bytes, big-endian) and pvvx's format (15 bytes,
//! little-endian, finer resolution). See github.com/pvvx/ATC_MiThermometer.

use std::borrow::Cow;

use super::{
    DecodeError, Decoded, Measurement, Value, i16be, i16le, mac_from_be, mac_from_le, u16be, u16le,
};

/// ATC1441: MAC (BE) 6 | temp i16 BE 0.1 °C | hum u8 % | batt u8 % | mV u16 BE | counter u8.
pub fn decode_atc1441(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.len() != 13 {
        return Err(DecodeError::TooShort(d.len()));
    }
    let (Some(t), Some(mv)) = (i16be(d, 6), u16be(d, 10)) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    let mac = mac_from_be(d);
    Ok(Decoded {
        measurements: vec![
            Measurement::float("temperature", f64::from(t) / 10.0, "°C"),
            Measurement::new("humidity", Value::Float(f64::from(d[8])), Some("%")),
            Measurement::new("battery", Value::UInt(u64::from(d[9])), Some("%")),
            Measurement::float("voltage", f64::from(mv) / 1000.0, "V"),
        ],
        packet_id: Some(u32::from(d[12])),
        embedded_mac: mac,
        model: Some(Cow::Borrowed("ATC1441")),
        ..Default::default()
    })
}

/// pvvx: MAC (LE) 6 | temp i16 LE 0.01 °C | hum u16 LE 0.01 % | mV u16 LE | batt u8 |
/// counter u8 | flags u8.
pub fn decode_pvvx(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.len() != 15 {
        return Err(DecodeError::TooShort(d.len()));
    }
    let (Some(t), Some(h), Some(mv)) = (i16le(d, 6), u16le(d, 8), u16le(d, 10)) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    let flags = d[14];
    let mut m = vec![
        Measurement::float("temperature", f64::from(t) / 100.0, "°C"),
        Measurement::float("humidity", f64::from(h) / 100.0, "%"),
        Measurement::float("voltage", f64::from(mv) / 1000.0, "V"),
        Measurement::new("battery", Value::UInt(u64::from(d[12])), Some("%")),
    ];
    // flags bit 0: reed switch input (GPIO), bit 1: output controlled by thresholds
    m.push(Measurement::flag("input", flags & 0x01 != 0));
    m.push(Measurement::flag("output", flags & 0x02 != 0));
    Ok(Decoded {
        measurements: m,
        packet_id: Some(u32::from(d[13])),
        embedded_mac: mac_from_le(d),
        model: Some(Cow::Borrowed("pvvx")),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_exact() {
        assert_eq!(decode_atc1441(&[0; 12]), Err(DecodeError::TooShort(12)));
        assert_eq!(decode_pvvx(&[0; 13]), Err(DecodeError::TooShort(13)));
        assert!(decode_atc1441(&[0; 13]).is_ok());
    }

    #[test]
    fn pvvx_flags() {
        let d = hex::decode("5601cf38c1a44008bd13470c64cc03").unwrap();
        let r = decode_pvvx(&d).unwrap();
        assert!(r.measurements.contains(&Measurement::flag("input", true)));
        assert!(r.measurements.contains(&Measurement::flag("output", true)));
        assert_eq!(r.packet_id, Some(0xcc));
        assert_eq!(r.embedded_mac.unwrap().to_string(), "A4:C1:38:CF:01:56");
    }
}
