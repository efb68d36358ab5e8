//! A regular expression with named captures, for sensors with a format of their own
//! (`PM2.5: 12 ug/m3 PM10: 20 ug/m3`). regex-lite runs in linear time, so a hostile line
//! cannot make matching explode; the compiled size is capped at config time. Its classes
//! (`\d`, `\w`, `\s`) are ASCII, which is what sensor lines are.

use serde::Deserialize;

use super::{BuildError, Outcome, ParseError, Raw, options_error};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexOptions {
    pub pattern: String,
}

#[derive(Debug, Clone)]
pub struct Re {
    re: ::regex_lite::Regex,
    groups: Vec<usize>,
}

const SIZE_LIMIT: usize = 1 << 20;

impl Re {
    pub fn build(o: &RegexOptions, fields: &[&str]) -> Result<Re, BuildError> {
        let re = ::regex_lite::RegexBuilder::new(&o.pattern)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| options_error(format!("invalid pattern: {e}")))?;
        let names: Vec<&str> = re.capture_names().flatten().collect();
        let groups = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                re.capture_names()
                    .position(|n| n == Some(*f))
                    .ok_or_else(|| {
                        (
                            i,
                            format!(
                                "the pattern has no capture named `{f}` (named: {})",
                                names.join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Re { re, groups })
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        let caps = self.re.captures(line).ok_or(ParseError::NoMatch)?;
        Ok(Outcome::Fields(
            self.groups
                .iter()
                .map(|&g| {
                    caps.get(g)
                        .map(|m| Raw::Text(m.as_str().to_string()))
                        .filter(|r| r != &Raw::Text(String::new()))
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_captures() {
        let o = RegexOptions {
            pattern:
                r"PM2\.5:\s*(?P<pm25>\d+)\s*ug/m3\s+PM10:\s*(?P<pm10>\d+)(?:\s+T=(?P<t>-?[\d.]+))?"
                    .into(),
        };
        let p = Re::build(&o, &["pm10", "pm25", "t"]).unwrap();
        assert_eq!(
            p.parse("PM2.5: 12 ug/m3 PM10: 20 ug/m3"),
            Ok(Outcome::Fields(vec![
                Some(Raw::Text("20".into())),
                Some(Raw::Text("12".into())),
                None
            ]))
        );
        assert_eq!(p.parse("hello"), Err(ParseError::NoMatch));
        assert_eq!(Re::build(&o, &["pm1"]).unwrap_err().0, 0);
        assert_eq!(
            Re::build(
                &RegexOptions {
                    pattern: "(".into()
                },
                &[]
            )
            .unwrap_err()
            .0,
            usize::MAX
        );
    }
}
