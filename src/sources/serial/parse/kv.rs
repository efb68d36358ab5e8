//! `key=value` pairs, as Arduino sketches print them: `T=21.5 H=40`, `t:21.5,h:40`.

use serde::Deserialize;

use super::{BuildError, Outcome, ParseError, Raw, options_error};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvOptions {
    /// Characters that separate pairs (any of them).
    #[serde(default = "pair_seps")]
    pub pair_separators: String,
    /// Characters that separate a key from its value (the first one in a pair counts).
    #[serde(default = "kv_seps")]
    pub separators: String,
}

fn pair_seps() -> String {
    " \t,;".into()
}

fn kv_seps() -> String {
    "=:".into()
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            pair_separators: pair_seps(),
            separators: kv_seps(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Kv {
    pair_seps: Vec<char>,
    kv_seps: Vec<char>,
    keys: Vec<String>,
}

impl Kv {
    pub fn build(o: &KvOptions, fields: &[&str]) -> Result<Kv, BuildError> {
        let pair_seps: Vec<char> = o.pair_separators.chars().collect();
        let kv_seps: Vec<char> = o.separators.chars().collect();
        if pair_seps.is_empty() || kv_seps.is_empty() {
            return Err(options_error(
                "pair_separators and separators must not be empty",
            ));
        }
        if let Some(c) = kv_seps.iter().find(|c| pair_seps.contains(c)) {
            return Err(options_error(format!(
                "{c:?} cannot separate both pairs and keys"
            )));
        }
        if let Some(i) = fields
            .iter()
            .position(|f| f.is_empty() || f.contains(&pair_seps[..]) || f.contains(&kv_seps[..]))
        {
            return Err((
                i,
                format!("key {:?} cannot be empty or contain a separator", fields[i]),
            ));
        }
        Ok(Kv {
            pair_seps,
            kv_seps,
            keys: fields.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        let mut values: Vec<Option<Raw>> = vec![None; self.keys.len()];
        let mut pairs = 0usize;
        for pair in line.split(&self.pair_seps[..]).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once(&self.kv_seps[..]) else {
                return Err(ParseError::Malformed(format!("{pair:?} is not key=value")));
            };
            pairs += 1;
            if let Some(i) = self.keys.iter().position(|key| key == k)
                && values[i].is_none()
                && !v.is_empty()
            {
                values[i] = Some(Raw::Text(v.to_string()));
            }
        }
        if pairs == 0 {
            return Err(ParseError::Malformed("no key=value pairs".into()));
        }
        Ok(Outcome::Fields(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Raw> {
        Some(Raw::Text(s.into()))
    }

    #[test]
    fn arduino_styles() {
        let p = Kv::build(&KvOptions::default(), &["T", "H", "rssi"]).unwrap();
        assert_eq!(
            p.parse("T=21.5 H=40"),
            Ok(Outcome::Fields(vec![t("21.5"), t("40"), None]))
        );
        assert_eq!(
            p.parse("H:41, T:-3.5,  rssi=-70"),
            Ok(Outcome::Fields(vec![t("-3.5"), t("41"), t("-70")]))
        );
        assert_eq!(
            p.parse("T= H=40 T=5"),
            Ok(Outcome::Fields(vec![t("5"), t("40"), None])),
            "first non-empty wins"
        );
        assert_eq!(p.parse("x=1"), Ok(Outcome::Fields(vec![None, None, None])));
    }

    #[test]
    fn garbage() {
        let p = Kv::build(&KvOptions::default(), &["T"]).unwrap();
        assert!(matches!(p.parse("T=1 junk"), Err(ParseError::Malformed(_))));
        assert!(matches!(p.parse("   "), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn custom_separators() {
        let o = KvOptions {
            pair_separators: "&".into(),
            separators: "=".into(),
        };
        let p = Kv::build(&o, &["a b"]).unwrap();
        assert_eq!(p.parse("a b=1:2&c=3"), Ok(Outcome::Fields(vec![t("1:2")])));
        assert!(
            Kv::build(
                &KvOptions {
                    pair_separators: "=".into(),
                    separators: "=".into()
                },
                &["a"]
            )
            .is_err()
        );
        assert_eq!(
            Kv::build(&KvOptions::default(), &["a", "b=c"])
                .unwrap_err()
                .0,
            1
        );
    }
}
