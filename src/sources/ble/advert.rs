//! The neutral advertisement type every scanner produces and every decoder reads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A 48-bit Bluetooth device address, most significant byte first (as printed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected AA:BB:CC:DD:EE:FF)")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;
    /// Accepts `AA:BB:CC:DD:EE:FF`, `aa-bb-…` and `AABBCCDDEEFF`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(40).collect());
        let hexs: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
        if hexs.len() != 12 || (s.len() != 12 && s.len() != 17) {
            return Err(err());
        }
        let v = hex::decode(&hexs).map_err(|_| err())?;
        let mut out = [0u8; 6];
        out.copy_from_slice(&v);
        Ok(Mac(out))
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Expands a 16-bit SIG UUID onto the Bluetooth base UUID.
pub const fn uuid16(u: u16) -> u128 {
    ((u as u128) << 96) | 0x0000_0000_0000_1000_8000_0080_5F9B_34FB
}

/// The 16-bit short form of a UUID on the Bluetooth base UUID, if it is one.
pub const fn short_uuid(u: u128) -> Option<u16> {
    if u & 0xFFFF_0000_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF == 0x0000_0000_0000_1000_8000_0080_5F9B_34FB {
        Some((u >> 96) as u16)
    } else {
        None
    }
}

/// What one advertisement (or one merged advert + scan response) told us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advert {
    pub mac: Option<Mac>,
    pub rssi: Option<i16>,
    pub name: Option<String>,
    pub tx_power: Option<i8>,
    /// Company id -> data after the company id.
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
    /// Service UUID (128-bit form) -> data after the UUID.
    pub service_data: BTreeMap<u128, Vec<u8>>,
    pub service_uuids: Vec<u128>,
}

/// Caps on what one advert may carry (extended advertising allows 1650 bytes).
const MAX_ADV_BYTES: usize = 1650;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertError {
    #[error("advertising data longer than {MAX_ADV_BYTES} bytes")]
    TooLong,
}

impl Advert {
    pub fn service_data16(&self, u: u16) -> Option<&[u8]> {
        self.service_data.get(&uuid16(u)).map(Vec::as_slice)
    }

    /// Parses raw AD structures (`len, type, data…` repeated) as found in an LE
    /// Advertising Report. Trailing bytes that do not form a complete structure
    /// are ignored and reported via `truncated` in the result.
    pub fn parse(
        mac: Option<Mac>,
        rssi: Option<i16>,
        data: &[u8],
    ) -> Result<(Advert, bool), AdvertError> {
        if data.len() > MAX_ADV_BYTES {
            return Err(AdvertError::TooLong);
        }
        let mut adv = Advert {
            mac,
            rssi,
            ..Default::default()
        };
        let mut i = 0usize;
        let mut truncated = false;
        while i < data.len() {
            let len = data[i] as usize;
            if len == 0 {
                // Zero length marks the end of significant data (Core spec Vol 3 Part C 11).
                break;
            }
            let Some(ad) = data.get(i + 1..i + 1 + len) else {
                truncated = true;
                break;
            };
            adv.apply(ad[0], &ad[1..]);
            i += 1 + len;
        }
        Ok((adv, truncated))
    }

    fn apply(&mut self, ad_type: u8, d: &[u8]) {
        match ad_type {
            // Incomplete / complete lists of 16-bit service UUIDs
            0x02 | 0x03 => {
                for c in d.chunks_exact(2) {
                    self.service_uuids
                        .push(uuid16(u16::from_le_bytes([c[0], c[1]])));
                }
            }
            // 128-bit service UUIDs
            0x06 | 0x07 => {
                for c in d.chunks_exact(16) {
                    self.service_uuids.push(u128_le(c));
                }
            }
            // Shortened / complete local name
            0x08 | 0x09 if ad_type == 0x09 || self.name.is_none() => {
                self.name = Some(
                    String::from_utf8_lossy(d)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            0x0A => self.tx_power = d.first().map(|&b| b as i8),
            // Service data, 16-bit UUID
            0x16 if d.len() >= 2 => {
                let u = u16::from_le_bytes([d[0], d[1]]);
                self.service_data.insert(uuid16(u), d[2..].to_vec());
            }
            // Service data, 32-bit UUID
            0x20 if d.len() >= 4 => {
                let u = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                let full = ((u as u128) << 96) | (uuid16(0) & ((1u128 << 96) - 1));
                self.service_data.insert(full, d[4..].to_vec());
            }
            // Service data, 128-bit UUID
            0x21 if d.len() >= 16 => {
                self.service_data
                    .insert(u128_le(&d[..16]), d[16..].to_vec());
            }
            0xFF if d.len() >= 2 => {
                let c = u16::from_le_bytes([d[0], d[1]]);
                self.manufacturer_data.insert(c, d[2..].to_vec());
            }
            _ => {}
        }
    }
}

impl Advert {
    /// Encodes the advert back into AD structures (the HEX of a replay line), so adverts
    /// heard through BlueZ — which hands over fields, not raw bytes — can be recorded.
    /// Fields too long for one AD structure are left out.
    pub fn to_ad_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |t: u8, parts: &[&[u8]]| {
            let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
            if len <= 255 {
                out.push(len as u8);
                out.push(t);
                for p in parts {
                    out.extend_from_slice(p);
                }
            }
        };
        if let Some(n) = &self.name {
            put(0x09, &[n.as_bytes()]);
        }
        if let Some(t) = self.tx_power {
            put(0x0A, &[&[t as u8]]);
        }
        let (short, long): (Vec<u128>, Vec<u128>) = self
            .service_uuids
            .iter()
            .partition(|u| short_uuid(**u).is_some());
        if !short.is_empty() {
            let b: Vec<u8> = short
                .iter()
                .filter_map(|u| short_uuid(*u))
                .flat_map(u16::to_le_bytes)
                .collect();
            put(0x03, &[&b]);
        }
        if !long.is_empty() {
            let b: Vec<u8> = long.iter().flat_map(|u| u.to_le_bytes()).collect();
            put(0x07, &[&b]);
        }
        for (c, d) in &self.manufacturer_data {
            put(0xFF, &[&c.to_le_bytes(), d]);
        }
        for (u, d) in &self.service_data {
            match short_uuid(*u) {
                Some(s) => put(0x16, &[&s.to_le_bytes(), d]),
                None => put(0x21, &[&u.to_le_bytes(), d]),
            }
        }
        out
    }
}

fn u128_le(c: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&c[..16]);
    u128::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_back_to_the_same_advert() {
        let data = hex::decode(concat!(
            "0201060a16d2fc4002ca0903bf13",
            "0cff99040512fc5394c37c0004",
            "0409415443",
            "0303aafe",
            "020ac5",
            "1221",
            "9ecadc240ee5a9e093f3a3b50100406e",
            "0102"
        ))
        .unwrap();
        let (a, _) = Advert::parse(None, Some(-3), &data).unwrap();
        assert_eq!(a.service_data.len(), 2);
        let (b, trunc) = Advert::parse(None, Some(-3), &a.to_ad_bytes()).unwrap();
        assert!(!trunc);
        assert_eq!(a, b);
    }

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "a4:c1:38:8d:18:b2".parse().unwrap();
        assert_eq!(m.to_string(), "A4:C1:38:8D:18:B2");
        assert_eq!("A4C1388D18B2".parse::<Mac>().unwrap(), m);
        assert!("A4:C1:38:8D:18".parse::<Mac>().is_err());
        assert!("A4:C1:38:8D:18:ZZ".parse::<Mac>().is_err());
        assert!("A4:C1:38:8D:18:B2:00".parse::<Mac>().is_err());
    }

    #[test]
    fn uuid_forms() {
        assert_eq!(uuid16(0xfcd2), 0x0000fcd2_0000_1000_8000_00805f9b34fb);
        assert_eq!(short_uuid(uuid16(0x181a)), Some(0x181a));
        assert_eq!(short_uuid(0x6e400001_b5a3_f393_e0a9_e50e24dcca9e), None);
    }

    #[test]
    fn parses_service_and_manufacturer_data() {
        let data = hex::decode("0201060a16d2fc4002ca0903bf130cff99040512fc5394c37c0004").unwrap();
        let (a, trunc) = Advert::parse(None, Some(-60), &data).unwrap();
        assert!(!trunc);
        assert_eq!(
            a.service_data16(0xfcd2).unwrap(),
            &hex::decode("4002ca0903bf13").unwrap()[..]
        );
        assert_eq!(
            a.manufacturer_data[&0x0499],
            hex::decode("0512fc5394c37c0004").unwrap()
        );
    }

    #[test]
    fn names_uuid_lists_and_truncation() {
        // complete name "ATC", 16-bit UUID list, then a structure claiming 0x1e bytes
        let data = hex::decode(concat!("0409415443", "0303aafe", "1eff0102")).unwrap();
        let (a, trunc) = Advert::parse(None, None, &data).unwrap();
        assert!(trunc);
        assert_eq!(a.name.as_deref(), Some("ATC"));
        assert_eq!(a.service_uuids, vec![uuid16(0xfeaa)]);
        assert!(a.manufacturer_data.is_empty());
        assert!(Advert::parse(None, None, &vec![0u8; 2000]).is_err());
        // zero-length structure ends parsing quietly
        let (_, t) = Advert::parse(None, None, &[0, 5, 5]).unwrap();
        assert!(!t);
    }
}
