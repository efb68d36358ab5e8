//! The `upstream:` section of the device map, and broker URL parsing.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::Secret;
use crate::config::units::duration;

/// MQTT protocol version: `protocol: 3.1.1` (default) or `protocol: 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    V311,
    V5,
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom("protocol must be 3.1.1 or 5")),
        };
        match text.trim().trim_start_matches(['v', 'V']) {
            "3.1.1" | "311" | "4" => Ok(Protocol::V311),
            "5" | "5.0" => Ok(Protocol::V5),
            other => Err(serde::de::Error::custom(format!(
                "unknown protocol `{other}`: use 3.1.1 or 5"
            ))),
        }
    }
}

/// `tls:` — used with `mqtts://` and `wss://`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) to trust; without it, the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) and its private key, for mutual TLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// `upstream:` — the one MQTT connection to the broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `mqtt://host:1883`, `mqtts://host:8883`, `ws://host:8080/mqtt`, `wss://host/mqtt`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Defaults to the gateway id.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_keep_alive", with = "duration")]
    pub keep_alive: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Reconnect delay: doubles from `reconnect_min` up to `reconnect_max`, with jitter.
    #[serde(default = "default_reconnect_min", with = "duration")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "duration")]
    pub reconnect_max: Duration,
    /// Publishes awaiting acknowledgement at once (also the bound on duplicates after a
    /// connection loss).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
}

fn default_url() -> String {
    "mqtt://localhost:1883".into()
}
fn default_prefix() -> String {
    "edgebus".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_max_inflight() -> u16 {
    64
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: default_url(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            tls: None,
            protocol: Protocol::V311,
            keep_alive: default_keep_alive(),
            connect_timeout: default_connect_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            max_inflight: default_max_inflight(),
            topic_prefix: default_prefix(),
        }
    }
}

impl UpstreamConfig {
    /// Semantic checks: (path suffix, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match BrokerUrl::parse(&self.url) {
            Ok(u) => {
                if self.tls.is_some() && !u.scheme.is_tls() {
                    out.push((
                        "tls".into(),
                        "tls settings need an mqtts:// or wss:// url".into(),
                    ));
                }
            }
            Err(e) => out.push(("url".into(), e)),
        }
        if self.password.is_some() && self.password_file.is_some() {
            out.push((
                "password_file".into(),
                "give either password or password_file, not both".into(),
            ));
        }
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            out.push(("tls".into(), "cert and key go together (mutual TLS)".into()));
        }
        if self.keep_alive < Duration::from_secs(1) || self.keep_alive > Duration::from_secs(65535)
        {
            out.push(("keep_alive".into(), "must be between 1s and 65535s".into()));
        } else if self.keep_alive.subsec_nanos() != 0 {
            // CONNECT carries whole seconds; pinging on a finer clock than the broker's
            // expiry would drift from it.
            out.push((
                "keep_alive".into(),
                "must be a whole number of seconds".into(),
            ));
        } else if self.protocol == Protocol::V5 && self.keep_alive < Duration::from_secs(5) {
            // rumqttc's MQTT 5 client refuses (panics on) a shorter keep-alive.
            out.push((
                "keep_alive".into(),
                "must be at least 5s with protocol \"5\"".into(),
            ));
        }
        if self.connect_timeout < Duration::from_secs(1) {
            out.push(("connect_timeout".into(), "must be at least 1s".into()));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            out.push((
                "reconnect_min".into(),
                "must be greater than 0 and at most reconnect_max".into(),
            ));
        }
        if !(1..=1000).contains(&self.max_inflight) {
            out.push(("max_inflight".into(), "must be between 1 and 1000".into()));
        }
        if self.topic_prefix.contains(['+', '#']) {
            out.push(("topic_prefix".into(), "must not contain + or #".into()));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl Scheme {
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path for websockets (`/` when absent).
    pub path: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` is not a URL (e.g. mqtt://broker:1883)"))?;
        let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (Scheme::Mqtt, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtts, 8883),
            "ws" => (Scheme::Ws, 80),
            "wss" => (Scheme::Wss, 443),
            other => {
                return Err(format!(
                    "unsupported scheme `{other}`: use mqtt, mqtts, ws or wss"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p, url)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("`{url}`: unexpected text after ]")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p, url)?),
                None => (hostport.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        if !matches!(scheme, Scheme::Ws | Scheme::Wss) && path != "/" && !path.is_empty() {
            return Err(format!(
                "`{url}`: a path is only meaningful for ws:// and wss://"
            ));
        }
        Ok(BrokerUrl {
            scheme,
            host,
            port,
            path: path.to_string(),
            username,
            password,
        })
    }

    /// `ws://host:port/path` as the websocket handshake wants it.
    pub fn ws_url(&self) -> String {
        let scheme = if self.scheme == Scheme::Wss {
            "wss"
        } else {
            "ws"
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{url}`: invalid port `{p}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("mqtt://broker.example.com").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Mqtt, "broker.example.com", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.1:8884").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Mqtts, 8884));
        let u = BrokerUrl::parse("wss://user:pw@h.example/mqtt").unwrap();
        assert_eq!(u.scheme, Scheme::Wss);
        assert_eq!(u.port, 443);
        assert_eq!(u.path, "/mqtt");
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.ws_url(), "wss://h.example:443/mqtt");
        let u = BrokerUrl::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        let u = BrokerUrl::parse("ws://127.0.0.1:9001").unwrap();
        assert_eq!(u.ws_url(), "ws://127.0.0.1:9001/");
        for bad in [
            "broker:1883",
            "http://x",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h/path",
            "mqtt://[::1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_defaults_and_checks() {
        let c: UpstreamConfig =
            serde_json::from_str(r#"{"url":"mqtts://h","protocol":5}"#).unwrap();
        assert_eq!(c.protocol, Protocol::V5);
        assert!(c.validate().is_empty());
        let c: UpstreamConfig = serde_json::from_str(r#"{"protocol":"3.1.1"}"#).unwrap();
        assert_eq!(c.protocol, Protocol::V311);
        assert!(serde_json::from_str::<UpstreamConfig>(r#"{"protocol":"4.0"}"#).is_err());
        assert!(serde_json::from_str::<UpstreamConfig>(r#"{"urll":"x"}"#).is_err());
        let c: UpstreamConfig = serde_json::from_str(
            r#"{"url":"mqtt://h","tls":{"cert":"c.pem"},"max_inflight":0,"keep_alive":"0s"}"#,
        )
        .unwrap();
        let paths: Vec<String> = c.validate().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["tls", "tls", "keep_alive", "max_inflight"]);
        for (json, ok) in [
            (r#"{"keep_alive":"1s"}"#, true),
            (r#"{"keep_alive":"1500ms"}"#, false),
            (r#"{"keep_alive":"4s","protocol":5}"#, false),
            (r#"{"keep_alive":"5s","protocol":5}"#, true),
        ] {
            let c: UpstreamConfig = serde_json::from_str(json).unwrap();
            assert_eq!(c.validate().is_empty(), ok, "{json}: {:?}", c.validate());
        }
    }
}
