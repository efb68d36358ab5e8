//! Presence beacons: Apple iBeacon (manufacturer data 0x004C) and Google
//! Eddystone (service data 0xFEAA: UID, URL, TLM, encrypted TLM, EID).

use std::borrow::Cow;

use super::{DecodeError, Decoded, Measurement, Value, u16be, u16le, u32be};

/// iBeacon: 0x02 0x15 | UUID 16 | major u16 BE | minor u16 BE | measured power i8.
pub fn decode_ibeacon(d: &[u8]) -> Result<Decoded, DecodeError> {
    if !d.starts_with(&[0x02, 0x15]) {
        return Err(DecodeError::NotThisFormat);
    }
    if d.len() < 23 {
        return Err(DecodeError::TooShort(d.len()));
    }
    let (Some(major), Some(minor)) = (u16be(d, 18), u16be(d, 20)) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    Ok(Decoded {
        measurements: vec![
            Measurement::text("uuid", hex::encode(&d[2..18])),
            Measurement::new("major", Value::UInt(u64::from(major)), None),
            Measurement::new("minor", Value::UInt(u64::from(minor)), None),
            Measurement::int("measured_power", i64::from(d[22] as i8), Some("dBm")),
        ],
        model: Some(Cow::Borrowed("iBeacon")),
        ..Default::default()
    })
}

const URL_SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
const URL_CODES: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

/// Decodes Eddystone service data (bytes after the 0xFEAA UUID).
pub fn decode_eddystone(d: &[u8]) -> Result<Decoded, DecodeError> {
    let &frame = d.first().ok_or(DecodeError::TooShort(0))?;
    let tx = |m: &mut Vec<Measurement>| {
        if let Some(&t) = d.get(1) {
            m.push(Measurement::int(
                "tx_power",
                i64::from(t as i8),
                Some("dBm"),
            ));
        }
    };
    let mut m = Vec::new();
    let model = match frame {
        0x00 => {
            // UID: tx | namespace 10 | instance 6 | (2 reserved, optional)
            let (Some(ns), Some(inst)) = (d.get(2..12), d.get(12..18)) else {
                return Err(DecodeError::TooShort(d.len()));
            };
            tx(&mut m);
            m.push(Measurement::text("namespace", hex::encode(ns)));
            m.push(Measurement::text("instance", hex::encode(inst)));
            "Eddystone-UID"
        }
        0x10 => {
            // URL: tx | scheme | encoded URL (max 17 bytes)
            let Some(&scheme) = d.get(2) else {
                return Err(DecodeError::TooShort(d.len()));
            };
            let mut url = URL_SCHEMES
                .get(scheme as usize)
                .ok_or(DecodeError::Unsupported(Cow::Borrowed("URL scheme")))?
                .to_string();
            for &b in d.iter().skip(3).take(17) {
                match URL_CODES.get(b as usize) {
                    Some(s) => url.push_str(s),
                    None if (0x21..0x7F).contains(&b) => url.push(b as char),
                    None => return Err(DecodeError::Unsupported(Cow::Borrowed("URL byte"))),
                }
            }
            tx(&mut m);
            m.push(Measurement::text("url", url));
            "Eddystone-URL"
        }
        0x20 => match d.get(1) {
            Some(0x00) => {
                // TLM: version | battery mV u16 | temp 8.8 signed | adv count u32 | uptime u32 (0.1 s)
                let (Some(mv), Some(t), Some(cnt), Some(up)) =
                    (u16be(d, 2), u16be(d, 4), u32be(d, 6), u32be(d, 10))
                else {
                    return Err(DecodeError::TooShort(d.len()));
                };
                if mv != 0 {
                    m.push(Measurement::float("voltage", f64::from(mv) / 1000.0, "V"));
                }
                if t != 0x8000 {
                    m.push(Measurement::float(
                        "temperature",
                        f64::from(t as i16) / 256.0,
                        "°C",
                    ));
                }
                m.push(Measurement::new(
                    "adv_count",
                    Value::UInt(u64::from(cnt)),
                    None,
                ));
                m.push(Measurement::float("uptime", f64::from(up) / 10.0, "s"));
                "Eddystone-TLM"
            }
            Some(0x01) => {
                // eTLM: version | encrypted TLM 12 | salt u16 | MIC u16
                let Some(enc) = d.get(2..14) else {
                    return Err(DecodeError::TooShort(d.len()));
                };
                m.push(Measurement::flag("encrypted", true));
                m.push(Measurement::text("encrypted_data", hex::encode(enc)));
                // Salt and MIC are read little-endian, as beacontools does.
                if let (Some(salt), Some(mic)) = (u16le(d, 14), u16le(d, 16)) {
                    m.push(Measurement::new("salt", Value::UInt(u64::from(salt)), None));
                    m.push(Measurement::new("mic", Value::UInt(u64::from(mic)), None));
                }
                "Eddystone-eTLM"
            }
            _ => return Err(DecodeError::Unsupported(Cow::Borrowed("TLM version"))),
        },
        0x30 => {
            let Some(eid) = d.get(2..10) else {
                return Err(DecodeError::TooShort(d.len()));
            };
            tx(&mut m);
            m.push(Measurement::text("eid", hex::encode(eid)));
            "Eddystone-EID"
        }
        _ => {
            return Err(DecodeError::Unsupported(Cow::Borrowed(
                "Eddystone frame type",
            )));
        }
    };
    Ok(Decoded {
        measurements: m,
        model: Some(Cow::Borrowed(model)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_expansion_and_errors() {
        let d = hex::decode("10ec00676f6f676c6507").unwrap();
        let r = decode_eddystone(&d).unwrap();
        assert!(
            r.measurements
                .contains(&Measurement::text("url", "http://www.google.com".into()))
        );
        assert!(decode_eddystone(&hex::decode("10ec09").unwrap()).is_err());
        assert!(decode_eddystone(&hex::decode("10ec0019").unwrap()).is_err());
        assert!(decode_eddystone(&[0x40]).is_err());
        assert!(decode_eddystone(&[]).is_err());
        assert!(decode_ibeacon(&[0x02, 0x15, 0]).is_err());
        assert_eq!(decode_ibeacon(&[0x12]), Err(DecodeError::NotThisFormat));
    }

    #[test]
    fn tlm_negative_temperature_and_unsupported_marker() {
        let r = decode_eddystone(&hex::decode("20000000ff80000000010000000a").unwrap()).unwrap();
        assert!(
            r.measurements
                .contains(&Measurement::float("temperature", -0.5, "°C"))
        );
        assert!(
            !r.measurements.iter().any(|m| m.name == "voltage"),
            "0 mV means not supported"
        );
        let r = decode_eddystone(&hex::decode("200000008000000000010000000a").unwrap()).unwrap();
        assert!(!r.measurements.iter().any(|m| m.name == "temperature"));
    }
}
