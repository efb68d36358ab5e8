//! JSON lines (`{"t":21.5,"bme":{"p":1013.2}}`): each point names a JSON pointer
//! (`/bme/p`); a bare key (`t`) means a top-level member.

use serde::Deserialize;

use super::{BuildError, Outcome, ParseError, Raw};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {}

#[derive(Debug, Clone)]
pub struct Json {
    pointers: Vec<String>,
}

impl Json {
    pub fn build(_o: &JsonOptions, fields: &[&str]) -> Result<Json, BuildError> {
        let pointers = fields
            .iter()
            .map(|f| {
                if f.is_empty() || f.starts_with('/') {
                    f.to_string()
                } else {
                    format!("/{}", f.replace('~', "~0").replace('/', "~1"))
                }
            })
            .collect();
        Ok(Json { pointers })
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        // serde_json limits nesting depth (128), so hostile input cannot blow the stack.
        let doc: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| ParseError::Malformed(format!("invalid JSON: {e}")))?;
        Ok(Outcome::Fields(
            self.pointers
                .iter()
                .map(|p| match doc.pointer(p)? {
                    serde_json::Value::Null => None,
                    serde_json::Value::Bool(b) => Some(Raw::Bool(*b)),
                    serde_json::Value::Number(n) => Some(if let Some(u) = n.as_u64() {
                        if let Ok(i) = i64::try_from(u) {
                            Raw::Int(i)
                        } else {
                            Raw::UInt(u)
                        }
                    } else if let Some(i) = n.as_i64() {
                        Raw::Int(i)
                    } else {
                        Raw::Float(n.as_f64().unwrap_or(f64::NAN))
                    }),
                    serde_json::Value::String(s) => Some(Raw::Text(s.clone())),
                    other => Some(Raw::Text(other.to_string())),
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_and_types() {
        let p = Json::build(
            &JsonOptions {},
            &[
                "/bme/t", "n", "/arr/1", "ok", "s", "/missing", "big", "neg", "nul", "a/b",
            ],
        )
        .unwrap();
        let line = r#"{"bme":{"t":21.5},"n":7,"arr":[1,2],"ok":true,"s":"x","big":18446744073709551615,"neg":-3,"nul":null,"a/b":1}"#;
        assert_eq!(
            p.parse(line),
            Ok(Outcome::Fields(vec![
                Some(Raw::Float(21.5)),
                Some(Raw::Int(7)),
                Some(Raw::Int(2)),
                Some(Raw::Bool(true)),
                Some(Raw::Text("x".into())),
                None,
                Some(Raw::UInt(u64::MAX)),
                Some(Raw::Int(-3)),
                None,
                Some(Raw::Int(1)),
            ]))
        );
    }

    #[test]
    fn rejects_invalid_json() {
        let p = Json::build(&JsonOptions {}, &["t"]).unwrap();
        assert!(matches!(
            p.parse(r#"{"t":21.5"#),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            p.parse(&"[".repeat(10_000)),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(p.parse("[1]"), Ok(Outcome::Fields(vec![None])));
    }
}
