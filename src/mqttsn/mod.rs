//! MQTT-SN 1.2 gateway.
pub mod codec;
