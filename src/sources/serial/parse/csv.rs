//! Separated values with named columns (`21.5;40.1;1013.2`). Double-quoted fields may
//! hold the separator (`"a;b"`, with `""` for a quote), as spreadsheet-minded firmware
//! writes them.

use serde::Deserialize;

use super::{BuildError, Outcome, ParseError, Raw, options_error, single_char};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Column names in order; use `_` for columns to skip.
    pub columns: Vec<String>,
    /// One character; `"\t"` for tabs.
    #[serde(default = "comma")]
    pub separator: String,
    /// Accept lines with more columns than named (extra ones are ignored). Lines with
    /// fewer are always rejected: they are usually cut-off lines.
    #[serde(default)]
    pub allow_extra_columns: bool,
}

fn comma() -> String {
    ",".into()
}

#[derive(Debug, Clone)]
pub struct Csv {
    separator: char,
    ncols: usize,
    allow_extra: bool,
    /// Column index of each point.
    index: Vec<usize>,
}

impl Csv {
    pub fn build(o: &CsvOptions, fields: &[&str]) -> Result<Csv, BuildError> {
        let separator = single_char("separator", &o.separator)?;
        if separator == '"' {
            return Err(options_error("separator cannot be `\"`"));
        }
        if o.columns.is_empty() {
            return Err(options_error("columns must name at least one column"));
        }
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                o.columns
                    .iter()
                    .position(|c| c == f && c != "_")
                    .ok_or_else(|| {
                        (
                            i,
                            format!("no column named `{f}` (columns: {})", o.columns.join(", ")),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Csv {
            separator,
            ncols: o.columns.len(),
            allow_extra: o.allow_extra_columns,
            index,
        })
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        let cols = split(line, self.separator, self.ncols + 1)?;
        if cols.len() < self.ncols || (cols.len() > self.ncols && !self.allow_extra) {
            return Err(ParseError::Malformed(format!(
                "{}{} columns, expected {}",
                cols.len(),
                if cols.len() > self.ncols { "+" } else { "" },
                self.ncols
            )));
        }
        Ok(Outcome::Fields(
            self.index
                .iter()
                .map(|&i| {
                    let c = cols[i].trim();
                    (!c.is_empty()).then(|| Raw::Text(c.to_string()))
                })
                .collect(),
        ))
    }
}

/// Splits into at most `limit` fields (the last one then holds the rest), unquoting.
fn split(line: &str, sep: char, limit: usize) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
            at_start = true;
            if out.len() + 1 == limit {
                // Enough columns to decide; the rest is not needed.
                out.push(chars.collect());
                return Ok(out);
            }
            continue;
        } else if c == '"' && at_start && cur.trim().is_empty() {
            cur.clear();
            in_quotes = true;
        } else {
            cur.push(c);
        }
        at_start = false;
    }
    if in_quotes {
        return Err(ParseError::Malformed("unterminated quote".into()));
    }
    out.push(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(cols: &[&str], sep: &str, fields: &[&str]) -> Csv {
        let o = CsvOptions {
            columns: cols.iter().map(|s| s.to_string()).collect(),
            separator: sep.into(),
            allow_extra_columns: false,
        };
        Csv::build(&o, fields).unwrap()
    }

    fn t(s: &str) -> Option<Raw> {
        Some(Raw::Text(s.into()))
    }

    #[test]
    fn named_columns() {
        let p = csv(
            &["ts", "temperature", "humidity", "_"],
            ";",
            &["humidity", "temperature"],
        );
        assert_eq!(
            p.parse("1700000000; 21.5 ;40.1;x"),
            Ok(Outcome::Fields(vec![t("40.1"), t("21.5")]))
        );
        assert_eq!(
            p.parse("1;;40;x"),
            Ok(Outcome::Fields(vec![t("40"), None])),
            "empty column: no reading"
        );
    }

    #[test]
    fn column_count_is_checked() {
        let p = csv(&["a", "b", "c"], ",", &["c"]);
        assert!(
            matches!(p.parse("1,2"), Err(ParseError::Malformed(_))),
            "cut-off line"
        );
        assert!(matches!(p.parse("1,2,3,4"), Err(ParseError::Malformed(_))));
        let o = CsvOptions {
            columns: vec!["a".into(), "b".into()],
            separator: ",".into(),
            allow_extra_columns: true,
        };
        let p = Csv::build(&o, &["b"]).unwrap();
        assert_eq!(p.parse("1,2,3,4"), Ok(Outcome::Fields(vec![t("2")])));
    }

    #[test]
    fn quotes_and_tabs() {
        let p = csv(&["name", "v"], "\t", &["name", "v"]);
        assert_eq!(
            p.parse("\"a\t\"\"b\"\"\"\t7"),
            Ok(Outcome::Fields(vec![t("a\t\"b\""), t("7")]))
        );
        assert!(matches!(
            p.parse("\"open\t7"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn build_errors() {
        let o = CsvOptions {
            columns: vec!["a".into()],
            separator: ",".into(),
            allow_extra_columns: false,
        };
        assert_eq!(Csv::build(&o, &["a", "b"]).unwrap_err().0, 1);
        assert_eq!(Csv::build(&o, &["_"]).unwrap_err().0, 0);
        let o = CsvOptions {
            separator: ",,".into(),
            ..o
        };
        assert_eq!(Csv::build(&o, &["a"]).unwrap_err().0, usize::MAX);
    }
}
