//! BTHome v2 (service data UUID 0xFCD2), plain and AES-CCM encrypted.
//! Format: <https://bthome.io/format/>. Objects are `id, data` with a fixed
//! length per id (a few are length-prefixed), so an unknown id ends parsing.

use std::borrow::Cow;
use std::collections::HashMap;

use super::crypto::ccm_decrypt;
use super::{
    DecodeCtx, DecodeError, Decoded, Measurement, Value, decimals_of, mac_from_le, round_to,
    sint_le, uint_le,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Fixed-size number: length, signed, factor, unit.
    Num(u8, bool, f64, Option<&'static str>),
    /// One byte, 0 = false.
    Bool,
    /// Button event (1 byte).
    Button,
    /// Dimmer event (direction byte + steps byte).
    Dimmer,
    /// Command: opcode + length byte (low 5 bits) + args.
    Command,
    /// Length-prefixed UTF-8 text.
    Text,
    /// Length-prefixed raw bytes, published as hex.
    Raw,
    /// Unix timestamp (uint32, seconds).
    Timestamp,
    /// Firmware version, 3 or 4 bytes, least significant part first.
    Firmware(u8),
}

use Kind::*;

const C: Option<&str> = Some("°C");
const PCT: Option<&str> = Some("%");
const UGM3: Option<&str> = Some("µg/m³");
const NONE: Option<&str> = None;

/// (object id, point name, kind) for every object id of BTHome v2.
#[rustfmt::skip]
const OBJECTS: &[(u8, &str, Kind)] = &[
    (0x00, "packet_id", Num(1, false, 1.0, NONE)),
    (0x01, "battery", Num(1, false, 1.0, PCT)),
    (0x02, "temperature", Num(2, true, 0.01, C)),
    (0x03, "humidity", Num(2, false, 0.01, PCT)),
    (0x04, "pressure", Num(3, false, 0.01, Some("hPa"))),
    (0x05, "illuminance", Num(3, false, 0.01, Some("lx"))),
    (0x06, "mass", Num(2, false, 0.01, Some("kg"))),
    (0x07, "mass", Num(2, false, 0.01, Some("lb"))),
    (0x08, "dew_point", Num(2, true, 0.01, C)),
    (0x09, "count", Num(1, false, 1.0, NONE)),
    (0x0A, "energy", Num(3, false, 0.001, Some("kWh"))),
    (0x0B, "power", Num(3, false, 0.01, Some("W"))),
    (0x0C, "voltage", Num(2, false, 0.001, Some("V"))),
    (0x0D, "pm2_5", Num(2, false, 1.0, UGM3)),
    (0x0E, "pm10", Num(2, false, 1.0, UGM3)),
    (0x0F, "generic_boolean", Bool),
    (0x10, "power_on", Bool),
    (0x11, "opening", Bool),
    (0x12, "co2", Num(2, false, 1.0, Some("ppm"))),
    (0x13, "tvoc", Num(2, false, 1.0, UGM3)),
    (0x14, "moisture", Num(2, false, 0.01, PCT)),
    (0x15, "battery_low", Bool),
    (0x16, "battery_charging", Bool),
    (0x17, "carbon_monoxide", Bool),
    (0x18, "cold", Bool),
    (0x19, "connectivity", Bool),
    (0x1A, "door", Bool),
    (0x1B, "garage_door", Bool),
    (0x1C, "gas_detected", Bool),
    (0x1D, "heat", Bool),
    (0x1E, "light", Bool),
    (0x1F, "lock", Bool),
    (0x20, "moisture_detected", Bool),
    (0x21, "motion", Bool),
    (0x22, "moving", Bool),
    (0x23, "occupancy", Bool),
    (0x24, "plug", Bool),
    (0x25, "presence", Bool),
    (0x26, "problem", Bool),
    (0x27, "running", Bool),
    (0x28, "safety", Bool),
    (0x29, "smoke", Bool),
    (0x2A, "sound", Bool),
    (0x2B, "tamper", Bool),
    (0x2C, "vibration", Bool),
    (0x2D, "window", Bool),
    (0x2E, "humidity", Num(1, false, 1.0, PCT)),
    (0x2F, "moisture", Num(1, false, 1.0, PCT)),
    (0x3A, "button", Button),
    (0x3B, "command", Command),
    (0x3C, "dimmer", Dimmer),
    (0x3D, "count", Num(2, false, 1.0, NONE)),
    (0x3E, "count", Num(4, false, 1.0, NONE)),
    (0x3F, "rotation", Num(2, true, 0.1, Some("°"))),
    (0x40, "distance", Num(2, false, 1.0, Some("mm"))),
    (0x41, "distance", Num(2, false, 0.1, Some("m"))),
    (0x42, "duration", Num(3, false, 0.001, Some("s"))),
    (0x43, "current", Num(2, false, 0.001, Some("A"))),
    (0x44, "speed", Num(2, false, 0.01, Some("m/s"))),
    (0x45, "temperature", Num(2, true, 0.1, C)),
    (0x46, "uv_index", Num(1, false, 0.1, NONE)),
    (0x47, "volume", Num(2, false, 0.1, Some("L"))),
    (0x48, "volume", Num(2, false, 1.0, Some("mL"))),
    (0x49, "volume_flow_rate", Num(2, false, 0.001, Some("m³/h"))),
    (0x4A, "voltage", Num(2, false, 0.1, Some("V"))),
    (0x4B, "gas", Num(3, false, 0.001, Some("m³"))),
    (0x4C, "gas", Num(4, false, 0.001, Some("m³"))),
    (0x4D, "energy", Num(4, false, 0.001, Some("kWh"))),
    (0x4E, "volume", Num(4, false, 0.001, Some("L"))),
    (0x4F, "water", Num(4, false, 0.001, Some("L"))),
    (0x50, "timestamp", Timestamp),
    (0x51, "acceleration", Num(2, false, 0.001, Some("m/s²"))),
    (0x52, "gyroscope", Num(2, false, 0.001, Some("°/s"))),
    (0x53, "text", Text),
    (0x54, "raw", Raw),
    (0x55, "volume_storage", Num(4, false, 0.001, Some("L"))),
    (0x56, "conductivity", Num(2, false, 1.0, Some("µS/cm"))),
    (0x57, "temperature", Num(1, true, 1.0, C)),
    (0x58, "temperature", Num(1, true, 0.35, C)),
    (0x59, "count", Num(1, true, 1.0, NONE)),
    (0x5A, "count", Num(2, true, 1.0, NONE)),
    (0x5B, "count", Num(4, true, 1.0, NONE)),
    (0x5C, "power", Num(4, true, 0.01, Some("W"))),
    (0x5D, "current", Num(2, true, 0.001, Some("A"))),
    (0x5E, "direction", Num(2, false, 0.01, Some("°"))),
    (0x5F, "precipitation", Num(2, false, 0.1, Some("mm"))),
    (0x60, "channel", Num(1, false, 1.0, NONE)),
    (0x61, "rotational_speed", Num(2, false, 1.0, Some("rpm"))),
    (0x62, "speed", Num(4, true, 0.000001, Some("m/s"))),
    (0x63, "acceleration", Num(4, true, 0.000001, Some("m/s²"))),
    (0x64, "light_level", Num(1, false, 1.0, NONE)),
    (0x65, "settings_revision", Num(1, false, 1.0, NONE)),
    (0xF0, "device_type_id", Num(2, false, 1.0, NONE)),
    (0xF1, "firmware_version", Firmware(4)),
    (0xF2, "firmware_version", Firmware(3)),
];

/// Every object id we decode: (id, point name, data length; `None` when length-prefixed
/// or an event/device-info object). For documentation and cross-checks.
pub fn object_table() -> Vec<(u8, &'static str, Option<usize>)> {
    OBJECTS
        .iter()
        .map(|(id, n, k)| {
            let len = match k {
                Num(l, ..) => Some(*l as usize),
                Bool => Some(1),
                _ => None,
            };
            (*id, *n, len)
        })
        .collect()
}

fn lookup(id: u8) -> Option<(&'static str, Kind)> {
    OBJECTS
        .iter()
        .find(|(i, _, _)| *i == id)
        .map(|(_, n, k)| (*n, *k))
}

fn button_event(b: u8) -> Option<&'static str> {
    Some(match b {
        0x01 => "press",
        0x02 => "double_press",
        0x03 => "triple_press",
        0x04 => "long_press",
        0x05 => "long_double_press",
        0x06 => "long_triple_press",
        0x80 => "hold_press",
        0x81 => "hold_release",
        _ => return None,
    })
}

/// Decodes BTHome v2 service data (bytes after the 0xFCD2 UUID).
pub fn decode(sd: &[u8], ctx: &DecodeCtx<'_>) -> Result<Decoded, DecodeError> {
    let &info = sd.first().ok_or(DecodeError::TooShort(0))?;
    let encrypted = info & 0x01 != 0;
    let mac_included = info & 0x02 != 0;
    let version = (info >> 5) & 0x07;
    if version != 2 {
        return Err(DecodeError::Unsupported(Cow::Owned(format!(
            "BTHome version {version}"
        ))));
    }
    let mut at = 1;
    let mut out = Decoded {
        model: Some(Cow::Borrowed("BTHome v2")),
        ..Default::default()
    };
    if mac_included {
        out.embedded_mac = Some(
            mac_from_le(sd.get(1..7).ok_or(DecodeError::TooShort(sd.len()))?)
                .ok_or(DecodeError::TooShort(sd.len()))?,
        );
        at = 7;
    }
    let body = &sd[at..];
    let plain;
    let objects = if encrypted {
        // ciphertext | counter (4) | MIC (4)
        if body.len() < 9 {
            return Err(DecodeError::TooShort(sd.len()));
        }
        let key = ctx.bind_key.ok_or(DecodeError::NoKey)?;
        let mac = out.embedded_mac.or(ctx.mac).ok_or(DecodeError::NoMac)?;
        let (ct, rest) = body.split_at(body.len() - 8);
        let (counter, mic) = rest.split_at(4);
        let mut nonce = Vec::with_capacity(13);
        nonce.extend_from_slice(&mac.0);
        nonce.extend_from_slice(&[0xD2, 0xFC, info]);
        nonce.extend_from_slice(counter);
        plain = ccm_decrypt(key, &nonce, &[], ct, mic)?;
        out.encrypted = true;
        out.counter = Some(uint_le(counter) as u32);
        &plain[..]
    } else {
        body
    };
    parse_objects(objects, &mut out);
    Ok(out)
}

fn parse_objects(p: &[u8], out: &mut Decoded) {
    let mut raw: Vec<(&'static str, Value, Option<&'static str>)> = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let id = p[i];
        let Some((name, kind)) = lookup(id) else {
            out.partial = true; // length unknown: nothing after it can be read
            break;
        };
        let (data, next) = match kind {
            Num(n, ..) => (p.get(i + 1..i + 1 + n as usize), i + 1 + n as usize),
            Bool | Button => (p.get(i + 1..i + 2), i + 2),
            Dimmer => (p.get(i + 1..i + 3), i + 3),
            Timestamp => (p.get(i + 1..i + 5), i + 5),
            Firmware(n) => (p.get(i + 1..i + 1 + n as usize), i + 1 + n as usize),
            Text | Raw => match p.get(i + 1) {
                Some(&l) => (p.get(i + 2..i + 2 + l as usize), i + 2 + l as usize),
                None => (None, p.len()),
            },
            Command => match p.get(i + 2) {
                // opcode, then a length byte whose low 5 bits count the args
                Some(&l) => (
                    p.get(i + 1..i + 3 + (l & 0x1F) as usize),
                    i + 3 + (l & 0x1F) as usize,
                ),
                None => (None, p.len()),
            },
        };
        let Some(d) = data else {
            out.partial = true;
            break;
        };
        i = next;
        let value = match kind {
            Num(_, signed, factor, unit) => {
                if id == 0x00 {
                    out.packet_id = Some(d[0] as u32);
                }
                let v = if signed {
                    sint_le(d) as f64
                } else {
                    uint_le(d) as f64
                };
                let v = if factor == 1.0 {
                    if signed {
                        Value::Int(v as i64)
                    } else {
                        Value::UInt(v as u64)
                    }
                } else {
                    Value::Float(round_to(v * factor, decimals_of(factor)))
                };
                raw.push((name, v, unit));
                continue;
            }
            Bool => Value::Bool(d[0] != 0),
            Button => match button_event(d[0]) {
                Some(e) => Value::Text(e.to_string()),
                None => continue, // 0x00 = no event
            },
            Dimmer => match d[0] {
                0x01 => Value::Int(-(d[1] as i64)),
                0x02 => Value::Int(d[1] as i64),
                _ => continue,
            },
            Command => Value::Text(hex::encode(d)),
            Text => Value::Text(String::from_utf8_lossy(d).into_owned()),
            Raw => Value::Text(hex::encode(d)),
            Timestamp => Value::UInt(uint_le(d)),
            Firmware(_) => {
                let parts: Vec<String> = d.iter().rev().map(|b| b.to_string()).collect();
                Value::Text(parts.join("."))
            }
        };
        raw.push((name, value, None));
    }
    // The same quantity twice in one advert (e.g. two voltages): number them all.
    let mut totals: HashMap<&str, usize> = HashMap::new();
    for (n, _, _) in &raw {
        *totals.entry(n).or_default() += 1;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (n, v, u) in raw {
        let name = if totals[n] > 1 {
            let k = seen.entry(n).or_default();
            *k += 1;
            Cow::Owned(format!("{n}_{k}"))
        } else {
            Cow::Borrowed(n)
        };
        out.measurements.push(Measurement {
            name,
            value: v,
            unit: u,
        });
    }
}

/// Drops re-sent adverts. Devices repeat each frame for a while, and proxies can
/// re-order them, so: a packet id equal to the last one, or "behind" it by less
/// than 64 (modulo 256), is a repeat — unless `window` has passed since the
/// last accepted frame, in which case the device probably restarted.
#[derive(Debug, Clone, Default)]
pub struct PacketIdFilter {
    last: Option<(u32, std::time::Instant)>,
}

impl PacketIdFilter {
    pub fn accept(
        &mut self,
        id: u32,
        modulo: u32,
        now: std::time::Instant,
        window: std::time::Duration,
    ) -> bool {
        let ok = match self.last {
            None => true,
            Some((last, t)) => {
                if now.saturating_duration_since(t) > window {
                    true
                } else {
                    let m = u64::from(modulo.max(1));
                    let ahead = (u64::from(id) % m + m - u64::from(last) % m) % m;
                    ahead != 0 && ahead < m.div_ceil(4).max(1)
                }
            }
        };
        if ok {
            self.last = Some((id, now));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dec(h: &str) -> Decoded {
        decode(&hex::decode(h).unwrap(), &DecodeCtx::default()).unwrap()
    }
    fn get<'a>(d: &'a Decoded, n: &str) -> &'a Value {
        &d.measurements
            .iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("{n} in {d:?}"))
            .value
    }

    #[test]
    fn every_object_id_has_a_unique_entry_with_plausible_length() {
        let mut ids: Vec<u8> = OBJECTS.iter().map(|o| o.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), OBJECTS.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // 0x00..=0x2F, 0x3A..=0x65 and 0xF0..=0xF2
        assert_eq!(OBJECTS.len(), 0x30 + (0x65 - 0x3A + 1) + 3);
    }

    #[test]
    fn events_text_raw_binary_and_firmware() {
        let d = dec(concat!(
            "40",
            "0f01",
            "1a00",
            "2101",
            "3a04",
            "3c0203",
            "3b0102aabb",
            "5303414243",
            "5402beef",
            "f100010204",
            "f2000106"
        ));
        assert_eq!(get(&d, "generic_boolean"), &Value::Bool(true));
        assert_eq!(get(&d, "door"), &Value::Bool(false));
        assert_eq!(get(&d, "motion"), &Value::Bool(true));
        assert_eq!(get(&d, "button"), &Value::Text("long_press".into()));
        assert_eq!(get(&d, "dimmer"), &Value::Int(3));
        assert_eq!(get(&d, "command"), &Value::Text("0102aabb".into()));
        assert_eq!(get(&d, "text"), &Value::Text("ABC".into()));
        assert_eq!(get(&d, "raw"), &Value::Text("beef".into()));
        assert_eq!(
            get(&d, "firmware_version_1"),
            &Value::Text("4.2.1.0".into())
        );
        assert_eq!(get(&d, "firmware_version_2"), &Value::Text("6.1.0".into()));
        assert!(!d.partial);
    }

    #[test]
    fn signed_and_wide_numbers() {
        let d = dec("405cfeffffff5b00000080630100000062ffffffff");
        assert_eq!(get(&d, "power"), &Value::Float(-0.02));
        assert_eq!(get(&d, "count"), &Value::Int(i32::MIN as i64));
        assert_eq!(get(&d, "acceleration"), &Value::Float(0.000001));
        assert_eq!(get(&d, "speed"), &Value::Float(-0.000001));
    }

    #[test]
    fn truncated_object_keeps_earlier_ones() {
        let d = dec(concat!("400164", "02ca"));
        assert!(d.partial);
        assert_eq!(get(&d, "battery"), &Value::UInt(100));
        assert_eq!(d.measurements.len(), 1);
        let d = dec("4053");
        assert!(d.partial && d.measurements.is_empty());
    }

    #[test]
    fn header_checks() {
        let ctx = DecodeCtx::default();
        assert_eq!(decode(&[], &ctx), Err(DecodeError::TooShort(0)));
        assert!(matches!(
            decode(&[0x20], &ctx),
            Err(DecodeError::Unsupported(_))
        ));
        assert_eq!(
            decode(
                &hex::decode("41a47266c95f730011223378237214").unwrap(),
                &ctx
            ),
            Err(DecodeError::NoKey)
        );
        assert_eq!(decode(&[0x42, 1, 2], &ctx), Err(DecodeError::TooShort(3)));
    }

    #[test]
    fn packet_id_filter() {
        let t0 = Instant::now();
        let w = Duration::from_secs(4);
        let mut f = PacketIdFilter::default();
        assert!(f.accept(10, 256, t0, w));
        assert!(!f.accept(10, 256, t0, w), "same id is a repeat");
        assert!(f.accept(11, 256, t0, w));
        assert!(!f.accept(5, 256, t0, w), "older id is a repeat");
        assert!(f.accept(70, 256, t0, w), "ahead by 59 is new");
        assert!(
            !f.accept(200, 256, t0, w),
            "ahead by 130 looks like an old frame"
        );
        assert!(
            f.accept(200, 256, t0 + Duration::from_secs(5), w),
            "after the window anything goes"
        );
        assert!(
            f.accept(3, 256, t0 + Duration::from_secs(5), w),
            "wraps around 255"
        );
    }
}
