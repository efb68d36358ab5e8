//! Pure advertisement decoders: bytes in, typed measurements out.
//!
//! Every decoder takes untrusted radio bytes and must never panic: all reads go
//! through [`Cursor`]-style bounds-checked helpers, and every failure is a
//! [`DecodeError`] (counted and logged by the caller, never fatal).

pub mod atc;
pub mod beacon;
pub mod bthome;
pub(crate) mod crypto;
pub mod mibeacon;
pub mod ruuvi;

use std::borrow::Cow;
use std::fmt;

use super::advert::{Advert, Mac};

pub use crate::reading::Value;

/// One decoded quantity of an advertisement (becomes one reading / point).
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: Cow<'static, str>,
    pub value: Value,
    pub unit: Option<&'static str>,
}

impl Measurement {
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        value: Value,
        unit: Option<&'static str>,
    ) -> Self {
        Measurement {
            name: name.into(),
            value,
            unit,
        }
    }
    pub(crate) fn float(name: &'static str, v: f64, unit: &'static str) -> Self {
        Self::new(name, Value::Float(v), Some(unit))
    }
    pub(crate) fn int(name: &'static str, v: i64, unit: Option<&'static str>) -> Self {
        Self::new(name, Value::Int(v), unit)
    }
    pub(crate) fn flag(name: &'static str, v: bool) -> Self {
        Self::new(name, Value::Bool(v), None)
    }
    pub(crate) fn text(name: &'static str, v: String) -> Self {
        Self::new(name, Value::Text(v), None)
    }
}

/// The advertisement formats we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Bthome,
    RuuviV5,
    Atc1441,
    Pvvx,
    Mibeacon,
    Ibeacon,
    Eddystone,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Bthome => "bthome",
            Format::RuuviV5 => "ruuvi_v5",
            Format::Atc1441 => "atc1441",
            Format::Pvvx => "pvvx",
            Format::Mibeacon => "mibeacon",
            Format::Ibeacon => "ibeacon",
            Format::Eddystone => "eddystone",
        }
    }
    pub const ALL: [Format; 7] = [
        Format::Bthome,
        Format::RuuviV5,
        Format::Atc1441,
        Format::Pvvx,
        Format::Mibeacon,
        Format::Ibeacon,
        Format::Eddystone,
    ];
}

impl Format {
    /// The values this format always carries (name, unit), for `check` and discovery.
    /// Empty for formats whose content depends on the device (BTHome, MiBeacon, Eddystone).
    pub fn typical_points(self) -> &'static [(&'static str, Option<&'static str>)] {
        match self {
            Format::Atc1441 => &[
                ("temperature", Some("°C")),
                ("humidity", Some("%")),
                ("battery", Some("%")),
                ("voltage", Some("V")),
            ],
            Format::Pvvx => &[
                ("temperature", Some("°C")),
                ("humidity", Some("%")),
                ("battery", Some("%")),
                ("voltage", Some("V")),
            ],
            Format::RuuviV5 => &[
                ("temperature", Some("°C")),
                ("humidity", Some("%")),
                ("pressure", Some("hPa")),
                ("acceleration_x", Some("mg")),
                ("acceleration_y", Some("mg")),
                ("acceleration_z", Some("mg")),
                ("voltage", Some("V")),
                ("tx_power", Some("dBm")),
                ("movement_counter", None),
                ("measurement_sequence", None),
            ],
            Format::Ibeacon => &[
                ("uuid", None),
                ("major", None),
                ("minor", None),
                ("measured_power", Some("dBm")),
            ],
            Format::Bthome | Format::Mibeacon | Format::Eddystone => &[],
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of decoding one advertisement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub measurements: Vec<Measurement>,
    /// A counter the device increments per new measurement (BTHome packet id,
    /// ATC/pvvx frame counter, MiBeacon frame counter, Ruuvi sequence). The
    /// source drops repeats of the same value: devices re-send each frame many times.
    pub packet_id: Option<u32>,
    /// The advert was encrypted and authenticated with the bind key.
    pub encrypted: bool,
    /// Encryption counter (BTHome / MiBeacon v4-v5), for replay protection.
    pub counter: Option<u32>,
    /// MAC carried inside the payload, if the format has one.
    pub embedded_mac: Option<Mac>,
    /// Model or frame description for `ble scan` (e.g. "LYWSD03MMC", "TLM").
    pub model: Option<Cow<'static, str>>,
    /// Parsing stopped early (unknown object id, truncated object): what came
    /// before is still valid.
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload too short ({0} bytes)")]
    TooShort(usize),
    #[error("not this format")]
    NotThisFormat,
    #[error("unsupported {0}")]
    Unsupported(Cow<'static, str>),
    #[error("advert is encrypted and no bind key is configured")]
    NoKey,
    #[error("bind key has the wrong length ({0} bytes)")]
    BadKeyLength(usize),
    #[error("decryption failed (wrong bind key or corrupt advert)")]
    Decrypt,
    #[error("no MAC address to build the nonce")]
    NoMac,
}

/// What a decoder needs besides the payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeCtx<'a> {
    /// Advertiser address (nonce material for encrypted formats).
    pub mac: Option<Mac>,
    /// Per-device AES key (16 bytes; 12 for MiBeacon v2/v3 legacy).
    pub bind_key: Option<&'a [u8]>,
}

pub const UUID_BTHOME: u16 = 0xFCD2;
pub const UUID_ENV_SENSING: u16 = 0x181A;
pub const UUID_XIAOMI: u16 = 0xFE95;
pub const UUID_EDDYSTONE: u16 = 0xFEAA;
pub const COMPANY_RUUVI: u16 = 0x0499;
pub const COMPANY_APPLE: u16 = 0x004C;

/// Decodes `advert` with `format`, picking the right service/manufacturer data.
pub fn decode_with(
    format: Format,
    advert: &Advert,
    key: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    let ctx = DecodeCtx {
        mac: advert.mac,
        bind_key: key,
    };
    let sd = |u: u16| advert.service_data16(u).ok_or(DecodeError::NotThisFormat);
    let md = |c: u16| {
        advert
            .manufacturer_data
            .get(&c)
            .map(Vec::as_slice)
            .ok_or(DecodeError::NotThisFormat)
    };
    match format {
        Format::Bthome => bthome::decode(sd(UUID_BTHOME)?, &ctx),
        Format::Atc1441 => atc::decode_atc1441(sd(UUID_ENV_SENSING)?),
        Format::Pvvx => atc::decode_pvvx(sd(UUID_ENV_SENSING)?),
        Format::Mibeacon => mibeacon::decode(sd(UUID_XIAOMI)?, &ctx),
        Format::Eddystone => beacon::decode_eddystone(sd(UUID_EDDYSTONE)?),
        Format::RuuviV5 => ruuvi::decode_v5(md(COMPANY_RUUVI)?),
        Format::Ibeacon => beacon::decode_ibeacon(md(COMPANY_APPLE)?),
    }
}

/// Guesses the format from the advert's structure (UUIDs, company ids, lengths).
pub fn detect(advert: &Advert) -> Option<Format> {
    if advert.service_data16(UUID_BTHOME).is_some() {
        return Some(Format::Bthome);
    }
    if let Some(d) = advert.manufacturer_data.get(&COMPANY_RUUVI)
        && d.first() == Some(&5)
    {
        return Some(Format::RuuviV5);
    }
    if let Some(d) = advert.service_data16(UUID_ENV_SENSING) {
        match d.len() {
            13 => return Some(Format::Atc1441),
            15 => return Some(Format::Pvvx),
            _ => {}
        }
    }
    if advert.service_data16(UUID_XIAOMI).is_some() {
        return Some(Format::Mibeacon);
    }
    if advert.service_data16(UUID_EDDYSTONE).is_some() {
        return Some(Format::Eddystone);
    }
    if let Some(d) = advert.manufacturer_data.get(&COMPANY_APPLE)
        && d.starts_with(&[0x02, 0x15])
    {
        return Some(Format::Ibeacon);
    }
    None
}

/// Auto-detects and decodes. `Ok(None)` means no known format was found.
pub fn decode_auto(
    advert: &Advert,
    key: Option<&[u8]>,
) -> Result<Option<(Format, Decoded)>, DecodeError> {
    match detect(advert) {
        None => Ok(None),
        Some(f) => decode_with(f, advert, key).map(|d| Some((f, d))),
    }
}

// ---- small, bounds-checked readers shared by the decoders ----

pub(crate) fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
pub(crate) fn u16be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
pub(crate) fn i16le(b: &[u8], at: usize) -> Option<i16> {
    u16le(b, at).map(|v| v as i16)
}
pub(crate) fn i16be(b: &[u8], at: usize) -> Option<i16> {
    u16be(b, at).map(|v| v as i16)
}
pub(crate) fn u32le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
pub(crate) fn u32be(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
pub(crate) fn f32le(b: &[u8], at: usize) -> Option<f32> {
    u32le(b, at).map(f32::from_bits)
}

/// Little-endian unsigned integer of 1..=8 bytes.
pub(crate) fn uint_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .take(8)
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Little-endian two's-complement integer of 1..=8 bytes.
pub(crate) fn sint_le(b: &[u8]) -> i64 {
    let n = b.len().min(8);
    if n == 0 {
        return 0;
    }
    let raw = uint_le(&b[..n]);
    let shift = 64 - 8 * n as u32;
    ((raw << shift) as i64) >> shift
}

/// Rounds to `decimals` places, so 2506 * 0.01 prints as 25.06.
pub(crate) fn round_to(v: f64, decimals: u32) -> f64 {
    let p = 10f64.powi(decimals as i32);
    (v * p).round() / p
}

/// Number of decimals a scale factor implies (0.01 -> 2, 0.35 -> 2, 1 -> 0).
pub(crate) fn decimals_of(factor: f64) -> u32 {
    let mut d = 0;
    let mut f = factor;
    while d < 9 && (f - f.round()).abs() > 1e-9 {
        f *= 10.0;
        d += 1;
    }
    d
}

pub(crate) fn mac_from_le(b: &[u8]) -> Option<Mac> {
    let s = b.get(..6)?;
    Some(Mac([s[5], s[4], s[3], s[2], s[1], s[0]]))
}
pub(crate) fn mac_from_be(b: &[u8]) -> Option<Mac> {
    let s = b.get(..6)?;
    Some(Mac([s[0], s[1], s[2], s[3], s[4], s[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_helpers() {
        assert_eq!(uint_le(&[0x13, 0x8a, 0x01]), 0x018a13);
        assert_eq!(sint_le(&[0xea]), -22);
        assert_eq!(sint_le(&[0xff, 0x7f]), 32767);
        assert_eq!(sint_le(&[0x00, 0x80, 0x00, 0x80]), -2147450880);
        assert_eq!(sint_le(&[]), 0);
        assert_eq!(decimals_of(0.01), 2);
        assert_eq!(decimals_of(0.35), 2);
        assert_eq!(decimals_of(1.0), 0);
        assert_eq!(decimals_of(0.000001), 6);
        assert_eq!(round_to(2506.0 * 0.01, 2), 25.06);
        assert_eq!(u16le(&[1], 0), None);
        assert_eq!(u32le(&[1, 2, 3], 0), None);
        assert_eq!(u32le(&[1, 2, 3, 4], usize::MAX), None);
    }
}
