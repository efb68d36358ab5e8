//! edgebus: an edge gateway from field devices (Modbus, serial sensors, BLE, MQTT-SN) to an
//! MQTT broker, with a durable store-and-forward outbox.

pub mod clock;
pub mod config;
pub mod format;
pub mod health;
pub mod homeassistant;
pub mod message;
pub mod metrics;
pub mod mqttsn;
pub mod outbox;
pub mod pipeline;
pub mod reading;
pub mod service;
pub mod sources;
pub mod summary;
pub mod upstream;
