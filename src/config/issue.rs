//! Configuration problems, each tied to a path in the tree and so to a line and column.

use std::fmt;

use serde::de::DeserializeOwned;

use super::locate::{Path, Seg};

/// One problem in the device map.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub path: Path,
    pub message: String,
    /// Point at the key (e.g. an unknown key) rather than at the value.
    pub at_key: bool,
}

impl ConfigIssue {
    pub fn new(path: Path, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue {
            path,
            message: message.into(),
            at_key: false,
        }
    }

    pub fn at_key(mut self) -> ConfigIssue {
        self.at_key = true;
        self
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.0.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Marker that carries a relative path inside an error message across a nested
/// `Deserialize` (see [`nested_error`]).
const NESTED: char = '\u{1}';

/// Wraps an error raised while deserializing a sub-tree so that [`parse`] can recover the
/// path below the node where the outer deserializer stopped.
pub fn nested_error<E: serde::de::Error>(
    inner: serde_path_to_error::Error<serde_json::Error>,
) -> E {
    let rel = path_of(inner.path());
    let msg = inner.into_inner().to_string();
    E::custom(format!("{NESTED}{rel}{NESTED}{msg}"))
}

fn path_of(p: &serde_path_to_error::Path) -> Path {
    let mut out = Path::root();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.0.push(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => out.0.push(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Deserializes a sub-tree of the configuration, turning a failure into an issue located at
/// the exact node (or the unknown key) that caused it.
pub fn parse<T: DeserializeOwned>(
    value: &serde_json::Value,
    base: &Path,
) -> Result<T, ConfigIssue> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Ok(v),
        Err(err) => {
            let mut path = base.join(&path_of(err.path()));
            let mut msg = err.into_inner().to_string();
            // Unwrap nested paths (possibly several levels).
            while let Some(rest) = msg.strip_prefix(NESTED) {
                let Some((rel, m)) = rest.split_once(NESTED) else {
                    break;
                };
                path = path.join_str(rel);
                msg = m.to_string();
            }
            let mut issue = ConfigIssue::new(path, msg.clone());
            if let Some(name) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                if issue.path.0.last() != Some(&Seg::Key(name.to_string())) {
                    issue.path = issue.path.key(name);
                }
                issue.at_key = true;
            }
            Err(issue)
        }
    }
}
