//! MQTT-SN 1.2 gateway.
pub mod codec;
pub mod config;
pub mod gateway;
pub mod session;
pub mod topics;

pub use config::MqttSnConfig;
pub use gateway::{Action, Gateway, Rejected};
pub use session::{Addr, Peer};
