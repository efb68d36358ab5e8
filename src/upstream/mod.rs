//! Upstream MQTT connection.
