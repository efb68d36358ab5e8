//! Secrets in the device map: `${VAR}` substitution from the environment, `<key>_file`
//! indirection, and a `Secret` type that never prints its content.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::locate::Path;

/// A string that must not reach logs or `edgebus check` output.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that needs it (e.g. the MQTT CONNECT packet).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Accepts numbers too: an unquoted numeric password is still a password.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Secret(s)),
            serde_json::Value::Number(n) => Ok(Secret(n.to_string())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

/// Keys whose value may instead be read from a file named by `<key>_file`.
pub const FILE_KEYS: &[&str] = &["password", "bind_key", "hash_key", "token"];

/// A problem found while resolving secrets, with the path of the offending node.
pub struct SecretIssue {
    pub path: Path,
    pub message: String,
}

/// Replaces `${VAR}` (and `${VAR:-default}`) in every string of the tree and reads
/// `<key>_file` siblings of the keys in [`FILE_KEYS`]. Issues are collected, not fatal, so
/// `check` reports them all at once.
pub fn resolve(
    tree: &mut serde_json::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SecretIssue> {
    let mut issues = Vec::new();
    walk(tree, &Path::root(), env, &mut issues);
    issues
}

fn walk(
    v: &mut serde_json::Value,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<SecretIssue>,
) {
    match v {
        serde_json::Value::String(s) if s.contains("${") => match substitute(s, env) {
            Ok(new) => *s = new,
            Err(message) => issues.push(SecretIssue {
                path: path.clone(),
                message,
            }),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), env, issues);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                walk(item, &path.key(k), env, issues);
            }
            for key in FILE_KEYS {
                let file_key = format!("{key}_file");
                let Some(file) = map
                    .get(&file_key)
                    .and_then(|f| f.as_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                let p = path.key(&file_key);
                if map.contains_key(*key) {
                    issues.push(SecretIssue {
                        path: p,
                        message: format!("give either `{key}` or `{file_key}`, not both"),
                    });
                    continue;
                }
                match std::fs::read_to_string(&file) {
                    Ok(content) => {
                        map.remove(&file_key);
                        map.insert(
                            key.to_string(),
                            serde_json::Value::String(content.trim_end().to_string()),
                        );
                    }
                    Err(e) => issues.push(SecretIssue {
                        path: p,
                        message: format!("cannot read `{file}`: {e}"),
                    }),
                }
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}` and `${NAME:-default}`; `$${` is a literal `${`.
pub fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` in value".to_string());
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name `{name}` in `${{...}}`"));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn substitution() {
        assert_eq!(substitute("a${PW}b", &env).as_deref(), Ok("as3cretb"));
        assert_eq!(substitute("${NOPE:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(substitute("$${PW}", &env).as_deref(), Ok("${PW}"));
        assert!(substitute("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(substitute("${PW", &env).is_err());
    }

    #[test]
    fn file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let mut tree = serde_json::json!({"upstream": {"password_file": f.to_str().unwrap()}});
        assert!(resolve(&mut tree, &env).is_empty());
        assert_eq!(tree["upstream"]["password"], "from-file");
        let mut tree = serde_json::json!({"upstream": {"password_file": "/nonexistent/x"}});
        assert_eq!(resolve(&mut tree, &env).len(), 1);
    }

    #[test]
    fn debug_hides() {
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }
}
