//! Interim section types for `upstream:`, `buffer:` and `mqttsn:` until their modules own them.

use std::time::Duration;

use serde::Deserialize;

use super::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
}

fn default_url() -> String {
    "mqtt://localhost:1883".into()
}
fn default_prefix() -> String {
    "edgebus".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    #[serde(default, with = "super::units::duration::option")]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MqttSnConfig {}
