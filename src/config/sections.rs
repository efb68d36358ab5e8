//! Interim type for the `mqttsn:` section until its module owns it.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MqttSnConfig {}
