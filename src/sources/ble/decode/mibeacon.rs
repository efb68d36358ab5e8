//! Xiaomi MiBeacon (service data 0xFE95), versions 2-5, plain and encrypted.
//!
//! Frame: frame control u16 LE | product id u16 LE | frame counter u8 | [MAC 6, LE]
//! | [capability u8 [+ io u8]] | objects (id u16 LE, len u8, data) — encrypted
//! objects are followed by ext. counter (3) + MIC (4) for v4/v5 (AES-CCM, 12-byte
//! nonce, AAD 0x11) or by ext. counter (3) + 1 byte for v2/v3 (no usable tag).

use std::borrow::Cow;

use super::crypto::{ccm_ctr_only, ccm_decrypt};
use super::{
    DecodeCtx, DecodeError, Decoded, Measurement, Value, f32le, i16le, mac_from_le, round_to,
    u16le, u32le, uint_le,
};

/// Product ids of common sensors (for `ble scan` and battery-type decisions).
#[rustfmt::skip]
const MODELS: &[(u16, &str)] = &[
    (0x01AA, "LYWSDCGQ"), (0x0347, "CGG1"), (0x0B48, "CGG1-ENCRYPTED"), (0x066F, "CGDK2"),
    (0x045B, "LYWSD02"), (0x16E4, "LYWSD02MMC"), (0x2542, "LYWSD02MMC"), (0x055B, "LYWSD03MMC"),
    (0x2832, "MJWSD05MMC"), (0x4C47, "MJWSD05MMC"), (0x55B5, "MJWSD06MMC"), (0x5BEA, "MJWSD06MMC"),
    (0x0387, "MHO-C401"), (0x06D3, "MHO-C303"), (0x0576, "CGD1"), (0x0C3C, "CGC1"),
    (0x1203, "XMWSDJ04MMC"), (0x4F59, "CGDK3"), (0x0098, "HHCCJCY01"), (0x03BC, "GCLS002"),
    (0x015D, "HHCCPOT002"), (0x02DF, "JQJCY01YM"), (0x0997, "JTYJGD03MI"), (0x098B, "MCCGQ02HL"),
    (0x03D6, "CGH1"), (0x0A83, "CGPR1"), (0x07F6, "MJYD02YL"), (0x0A8D, "RTCGQ02LM"),
    (0x0863, "SJWS01LM"), (0x03B6, "YLKG07YL"), (0x0153, "YLYK01YL"), (0x78DB, "ESM787"),
];

/// Sensors that run on one AAA cell (others use a CR2032).
const AAA_MODELS: &[u16] = &[0x01AA, 0x4F59];

/// LYWSD03MMC and MHO-C401 stock firmware report humidity (object 0x1006) in 0.1 %
/// steps that jump around the sensor's real 1 % resolution; whole percent is honest.
const WHOLE_PERCENT_HUMIDITY: &[u16] = &[0x055B, 0x0387];

pub fn model_name(product_id: u16) -> Option<&'static str> {
    MODELS
        .iter()
        .find(|(p, _)| *p == product_id)
        .map(|(_, n)| *n)
}

/// Decodes MiBeacon service data (bytes after the 0xFE95 UUID).
pub fn decode(d: &[u8], ctx: &DecodeCtx<'_>) -> Result<Decoded, DecodeError> {
    let (Some(fc), Some(product)) = (u16le(d, 0), u16le(d, 2)) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    let Some(&frame_counter) = d.get(4) else {
        return Err(DecodeError::TooShort(d.len()));
    };
    let version = fc >> 12;
    if fc & (1 << 7) != 0 {
        return Err(DecodeError::Unsupported(Cow::Borrowed(
            "MiBeacon mesh frame",
        )));
    }
    if version < 2 {
        return Err(DecodeError::Unsupported(Cow::Owned(format!(
            "MiBeacon version {version}"
        ))));
    }
    let is_encrypted = fc & (1 << 3) != 0;
    let mut i = 5;
    let mut out = Decoded {
        model: Some(Cow::Owned(model_name(product).map_or_else(
            || format!("MiBeacon 0x{product:04X}"),
            str::to_string,
        ))),
        packet_id: Some(u32::from(frame_counter)),
        ..Default::default()
    };
    if fc & (1 << 4) != 0 {
        out.embedded_mac = Some(
            mac_from_le(d.get(5..11).ok_or(DecodeError::TooShort(d.len()))?)
                .ok_or(DecodeError::TooShort(d.len()))?,
        );
        i = 11;
    }
    if fc & (1 << 5) != 0 {
        let cap = *d.get(i).ok_or(DecodeError::TooShort(d.len()))?;
        i += 1;
        if cap & 0x20 != 0 {
            i += 1;
        }
    }
    if fc & (1 << 6) == 0 || i > d.len() {
        // no object (e.g. a pairing beacon): nothing to publish
        return Ok(out);
    }
    let mac = out.embedded_mac.or(ctx.mac);
    let plain;
    let objects: &[u8] = if is_encrypted {
        let key = ctx.bind_key.ok_or(DecodeError::NoKey)?;
        let mac = mac.ok_or(DecodeError::NoMac)?;
        let mut mac_le = mac.0;
        mac_le.reverse();
        if version >= 4 {
            if key.len() != 16 {
                return Err(DecodeError::BadKeyLength(key.len()));
            }
            if d.len() < i + 8 {
                return Err(DecodeError::TooShort(d.len()));
            }
            let (ct, tail) = d[i..].split_at(d.len() - i - 7);
            let (ext, mic) = tail.split_at(3);
            let mut nonce = Vec::with_capacity(12);
            nonce.extend_from_slice(&mac_le);
            nonce.extend_from_slice(&d[2..5]);
            nonce.extend_from_slice(ext);
            plain = ccm_decrypt(key, &nonce, &[0x11], ct, mic)?;
            out.counter = Some(((uint_le(ext) as u32) << 8) | u32::from(frame_counter));
        } else {
            if key.len() != 12 {
                return Err(DecodeError::BadKeyLength(key.len()));
            }
            if d.len() < i + 5 {
                return Err(DecodeError::TooShort(d.len()));
            }
            // v2/v3 keys are 12 bytes; the cipher key has 4 fixed bytes in the middle.
            let mut k = [0u8; 16];
            k[..6].copy_from_slice(&key[..6]);
            k[6..10].copy_from_slice(&[0x8D, 0x3D, 0x3C, 0x97]);
            k[10..].copy_from_slice(&key[6..]);
            let mut nonce = [0u8; 13];
            nonce[..5].copy_from_slice(&d[..5]);
            nonce[5..8].copy_from_slice(&d[d.len() - 4..d.len() - 1]);
            nonce[8..].copy_from_slice(&mac_le[..5]);
            plain = ccm_ctr_only(&k, &nonce, &d[i..d.len() - 4]);
        }
        out.encrypted = true;
        &plain
    } else {
        &d[i..]
    };
    let quirks = Quirks {
        aaa_battery: AAA_MODELS.contains(&product),
        whole_humidity: WHOLE_PERCENT_HUMIDITY.contains(&product),
    };
    let mut j = 0;
    let mut any = false;
    while j + 3 <= objects.len() {
        let id = u16::from_le_bytes([objects[j], objects[j + 1]]);
        let len = objects[j + 2] as usize;
        let Some(obj) = objects.get(j + 3..j + 3 + len) else {
            out.partial = true;
            break;
        };
        j += 3 + len;
        any |= decode_object(id, obj, quirks, &mut out.measurements);
    }
    if is_encrypted && version < 4 && (out.partial || !any) {
        // Legacy encryption has no tag: a structure that does not parse means a wrong key.
        return Err(DecodeError::Decrypt);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
struct Quirks {
    aaa_battery: bool,
    whole_humidity: bool,
}

/// Appends the measurements of one object; returns false for unknown or malformed objects.
fn decode_object(id: u16, o: &[u8], q: Quirks, m: &mut Vec<Measurement>) -> bool {
    let n = m.len();
    match (id, o.len()) {
        (0x1004, 2) => m.push(Measurement::float(
            "temperature",
            round_to(f64::from(i16le(o, 0).unwrap_or(0)) / 10.0, 1),
            "°C",
        )),
        (0x1006, 2) => {
            let h = f64::from(u16le(o, 0).unwrap_or(0)) / 10.0;
            let h = if q.whole_humidity {
                h.trunc()
            } else {
                round_to(h, 1)
            };
            m.push(Measurement::float("humidity", h, "%"));
        }
        (0x1007, 3) => m.push(Measurement::float("illuminance", uint_le(o) as f64, "lx")),
        (0x1008, 1) => m.push(Measurement::float("moisture", f64::from(o[0]), "%")),
        (0x1009, 2) => m.push(Measurement::float(
            "conductivity",
            f64::from(u16le(o, 0).unwrap_or(0)),
            "µS/cm",
        )),
        (0x100A, 1) => {
            let b = f64::from(o[0]);
            m.push(Measurement::new(
                "battery",
                Value::UInt(u64::from(o[0])),
                Some("%"),
            ));
            // MiBeacon sends no voltage: this is the usual linear estimate from the
            // percentage (AAA 0.8-1.6 V, CR2032 2.2-3.1 V), kept for compatibility.
            let (lo, hi) = if q.aaa_battery {
                (0.8, 1.6)
            } else {
                (2.2, 3.1)
            };
            m.push(Measurement::float(
                "voltage",
                round_to(lo + (hi - lo) * b / 100.0, 3),
                "V",
            ));
        }
        (0x100D, 4) => {
            m.push(Measurement::float(
                "temperature",
                round_to(f64::from(i16le(o, 0).unwrap_or(0)) / 10.0, 1),
                "°C",
            ));
            m.push(Measurement::float(
                "humidity",
                round_to(f64::from(u16le(o, 2).unwrap_or(0)) / 10.0, 1),
                "%",
            ));
        }
        (0x1010, 2) => m.push(Measurement::float(
            "formaldehyde",
            f64::from(u16le(o, 0).unwrap_or(0)) / 100.0,
            "mg/m³",
        )),
        (0x1012, 1) => m.push(Measurement::flag("power_on", o[0] != 0)),
        (0x1013, 1) => m.push(Measurement::float("consumable", f64::from(o[0]), "%")),
        (0x1014, 1) => m.push(Measurement::flag("moisture_detected", o[0] != 0)),
        (0x1015, 1) => m.push(Measurement::flag("smoke", o[0] != 0)),
        (0x1017, 4) => m.push(Measurement::int(
            "no_motion_time",
            i64::from(u32le(o, 0).unwrap_or(0)),
            Some("s"),
        )),
        (0x1018, 1) => m.push(Measurement::flag("light", o[0] != 0)),
        (0x1019, 1) => match o[0] {
            0 => m.push(Measurement::flag("opening", true)),
            1 => m.push(Measurement::flag("opening", false)),
            2 => {
                m.push(Measurement::flag("opening", true));
                m.push(Measurement::flag("door_left_open", true));
            }
            _ => {}
        },
        (0x000F, 3) => {
            m.push(Measurement::flag("motion", true));
            m.push(Measurement::float("illuminance", uint_le(o) as f64, "lx"));
        }
        (0x4801 | 0x4C01, 4) => {
            let t = f64::from(f32le(o, 0).unwrap_or(f32::NAN));
            if t.is_finite() {
                m.push(Measurement::float("temperature", round_to(t, 2), "°C"));
            }
        }
        (0x4802 | 0x4C02, 1) => m.push(Measurement::float("humidity", f64::from(o[0]), "%")),
        (0x4803 | 0x4C03, 1) => m.push(Measurement::new(
            "battery",
            Value::UInt(u64::from(o[0])),
            Some("%"),
        )),
        (0x4805, 4) => {
            let l = f64::from(f32le(o, 0).unwrap_or(f32::NAN));
            if l.is_finite() {
                m.push(Measurement::float("illuminance", round_to(l, 2), "lx"));
            }
        }
        (0x4C08, 4) => {
            let h = f64::from(f32le(o, 0).unwrap_or(f32::NAN));
            if h.is_finite() {
                m.push(Measurement::float("humidity", round_to(h, 2), "%"));
            }
        }
        _ => {}
    }
    m.len() > n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ble::advert::Mac;

    #[test]
    fn header_errors() {
        let c = DecodeCtx::default();
        assert_eq!(
            decode(&[0x50, 0x20, 0xaa], &c),
            Err(DecodeError::TooShort(3))
        );
        assert!(matches!(
            decode(&[0x80, 0x20, 0xaa, 0x01, 0], &c),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(&[0x50, 0x10, 0xaa, 0x01, 0], &c),
            Err(DecodeError::Unsupported(_))
        ));
        // no object flag: ok, nothing to publish
        assert_eq!(
            decode(&[0x00, 0x20, 0xaa, 0x01, 7], &c)
                .unwrap()
                .measurements,
            vec![]
        );
    }

    #[test]
    fn legacy_round_trip_and_wrong_key() {
        // Build a v3 encrypted frame with the CTR keystream and decode it again.
        let key12 = hex::decode("b853075158487aa39a5b5ea9").unwrap();
        let mac: Mac = "F8:24:41:C5:98:8B".parse().unwrap();
        let mut k = [0u8; 16];
        k[..6].copy_from_slice(&key12[..6]);
        k[6..10].copy_from_slice(&[0x8D, 0x3D, 0x3C, 0x97]);
        k[10..].copy_from_slice(&key12[6..]);
        let head = hex::decode("5830b60301").unwrap(); // v3, encrypted, MAC included, objects
        let mut mac_le = mac.0;
        mac_le.reverse();
        let ext = [0x11, 0x22, 0x33];
        let mut nonce = [0u8; 13];
        nonce[..5].copy_from_slice(&head);
        nonce[5..8].copy_from_slice(&ext);
        nonce[8..].copy_from_slice(&mac_le[..5]);
        let plain = hex::decode("0410020301").unwrap(); // temperature 25.9
        let ct = ccm_ctr_only(&k, &nonce, &plain);
        let mut frame = head.clone();
        frame.extend_from_slice(&mac_le);
        frame.extend_from_slice(&ct);
        frame.extend_from_slice(&ext);
        frame.push(0);
        let ctx = DecodeCtx {
            mac: Some(mac),
            bind_key: Some(&key12),
        };
        let d = decode(&frame, &ctx).unwrap();
        assert!(d.encrypted);
        assert_eq!(
            d.measurements,
            vec![Measurement::float("temperature", 25.9, "°C")]
        );
        let wrong = [0u8; 12];
        let ctx = DecodeCtx {
            mac: Some(mac),
            bind_key: Some(&wrong),
        };
        assert_eq!(decode(&frame, &ctx), Err(DecodeError::Decrypt));
        let ctx = DecodeCtx {
            mac: Some(mac),
            bind_key: Some(&k),
        };
        assert_eq!(decode(&frame, &ctx), Err(DecodeError::BadKeyLength(16)));
    }

    #[test]
    fn objects() {
        let mut m = Vec::new();
        let q = Quirks::default();
        assert!(decode_object(0x1019, &[2], q, &mut m));
        assert!(!decode_object(0x1019, &[9], q, &mut m));
        assert!(
            !decode_object(0x1004, &[1, 2, 3], q, &mut m),
            "wrong length"
        );
        assert!(!decode_object(0x4C01, &f32::NAN.to_le_bytes(), q, &mut m));
        assert!(decode_object(
            0x100A,
            &[50],
            Quirks {
                aaa_battery: true,
                ..q
            },
            &mut m
        ));
        assert_eq!(m.last().unwrap(), &Measurement::float("voltage", 1.2, "V"));
        assert!(decode_object(
            0x1006,
            &467u16.to_le_bytes(),
            Quirks {
                whole_humidity: true,
                ..q
            },
            &mut m
        ));
        assert_eq!(
            m.last().unwrap(),
            &Measurement::float("humidity", 46.0, "%")
        );
    }
}
