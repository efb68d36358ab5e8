//! The outbound MQTT message: what the outbox stores and the upstream publishes.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl<'de> Deserialize<'de> for QoS {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        QoS::from_u8(v)
            .ok_or_else(|| serde::de::Error::custom(format!("qos must be 0, 1 or 2, not {v}")))
    }
}

/// A message bound for the broker. `seq` is 0 until the outbox assigns one; it is unique for
/// the life of the data directory and gives the replay order.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub seq: u64,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub ts: SystemTime,
}

impl Message {
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Message {
            seq: 0,
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            ts: SystemTime::now(),
        }
    }
}
