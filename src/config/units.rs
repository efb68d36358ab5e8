//! Human units in the device map: durations (`5s`, `250ms`, `7d`) and sizes (`256MiB`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(f64),
    Text(String),
}

/// Parses `5s`, `1h30m`, `250ms`, `7d`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return secs_to_duration(secs);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration `{t}`: {e} (e.g. 5s, 250ms, 2m, 7d)"))
}

fn secs_to_duration(secs: f64) -> Result<Duration, String> {
    if (0.0..1e12).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "invalid duration {secs}: must be a non-negative number of seconds"
        ))
    }
}

/// Parses `256MiB`, `4 KiB`, `1GB`, `512k`; a bare number means bytes. Binary (KiB) and
/// decimal (KB) prefixes both exist because users copy either from datasheets.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{t}` (e.g. 256MiB, 64KiB, 1GB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1000.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "invalid size unit `{other}` in `{t}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = n * mult;
    if (0.0..1.8e19).contains(&bytes) {
        Ok(bytes as u64)
    } else {
        Err(format!("size `{t}` is out of range"))
    }
}

/// `#[serde(with = "crate::config::duration")]`
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => secs_to_duration(n),
            NumOrText::Text(t) => parse_duration(&t),
        }
        .map_err(serde::de::Error::custom)
    }

    /// `#[serde(default, with = "crate::config::duration::option")]`
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<NumOrText>::deserialize(d)? {
                None => Ok(None),
                Some(NumOrText::Num(n)) => secs_to_duration(n).map(Some),
                Some(NumOrText::Text(t)) => parse_duration(&t).map(Some),
            }
            .map_err(serde::de::Error::custom)
        }
    }
}

/// `#[serde(with = "crate::config::bytesize")]`
pub mod bytesize {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) if n >= 0.0 && n.fract() == 0.0 && n < 1.8e19 => Ok(n as u64),
            NumOrText::Num(n) => Err(format!("invalid size {n}")),
            NumOrText::Text(t) => parse_size(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 bananas").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
