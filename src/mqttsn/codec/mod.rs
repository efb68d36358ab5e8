//! MQTT-SN 1.2 packets <-> bytes.
//!
//! Pure and allocation-bounded: decoding never reads past the datagram, rejects lying length
//! fields, truncated bodies and unknown types with a typed [`CodecError`], and never panics
//! (a fuzz target checks this). This module depends on nothing else in the crate so the fuzz
//! target can compile it on its own.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_packet};
pub use encode::{encode, encode_packet, encode_to_vec};

/// Largest datagram the length field can describe.
pub const MAX_LEN: usize = 65_535;
/// Message type of the forwarder encapsulation header.
pub const ENCAPSULATED: u8 = 0xFE;

/// Everything that can be wrong with bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty or too short datagram ({0} bytes)")]
    Truncated(usize),
    #[error("length field says {declared} bytes, datagram has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("length field {0} is below the minimum header size")]
    BadLength(usize),
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{kind} body has {len} bytes, which is not valid")]
    BadBody { kind: &'static str, len: usize },
    #[error("reserved topic id type in flags 0x{0:02x}")]
    ReservedTopicIdType(u8),
    #[error("string field is not UTF-8")]
    InvalidUtf8,
    #[error("encapsulated message inside an encapsulated message")]
    NestedEncapsulation,
    #[error("message of {0} bytes does not fit the length field")]
    TooLong(usize),
}

/// Quality of service as carried in the flags; `MinusOne` is "publish without connection".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    MinusOne,
    Zero,
    One,
    Two,
}

impl Qos {
    fn from_bits(b: u8) -> Qos {
        match (b >> 5) & 0b11 {
            0 => Qos::Zero,
            1 => Qos::One,
            2 => Qos::Two,
            _ => Qos::MinusOne,
        }
    }
    fn bits(self) -> u8 {
        (match self {
            Qos::Zero => 0,
            Qos::One => 1,
            Qos::Two => 2,
            Qos::MinusOne => 3,
        }) << 5
    }
    /// QoS as MQTT knows it (-1 is sent as 0 upstream).
    pub fn as_mqtt(self) -> u8 {
        match self {
            Qos::MinusOne | Qos::Zero => 0,
            Qos::One => 1,
            Qos::Two => 2,
        }
    }
    pub fn from_mqtt(q: u8) -> Qos {
        match q {
            0 => Qos::Zero,
            1 => Qos::One,
            _ => Qos::Two,
        }
    }
}

/// How the 2-byte topic field of PUBLISH/SUBSCRIBE is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicIdType {
    Normal,
    Predefined,
    Short,
}

impl TopicIdType {
    fn from_bits(b: u8) -> Result<TopicIdType, CodecError> {
        match b & 0b11 {
            0 => Ok(TopicIdType::Normal),
            1 => Ok(TopicIdType::Predefined),
            2 => Ok(TopicIdType::Short),
            _ => Err(CodecError::ReservedTopicIdType(b)),
        }
    }
    fn bits(self) -> u8 {
        match self {
            TopicIdType::Normal => 0,
            TopicIdType::Predefined => 1,
            TopicIdType::Short => 2,
        }
    }
}

/// The flags octet (not every field is meaningful in every message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags {
    pub dup: bool,
    pub qos: Qos,
    pub retain: bool,
    pub will: bool,
    pub clean_session: bool,
    pub topic_id_type: TopicIdType,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            dup: false,
            qos: Qos::Zero,
            retain: false,
            will: false,
            clean_session: false,
            topic_id_type: TopicIdType::Normal,
        }
    }
}

impl Flags {
    pub fn from_byte(b: u8) -> Result<Flags, CodecError> {
        Ok(Flags {
            dup: b & 0x80 != 0,
            qos: Qos::from_bits(b),
            retain: b & 0x10 != 0,
            will: b & 0x08 != 0,
            clean_session: b & 0x04 != 0,
            topic_id_type: TopicIdType::from_bits(b)?,
        })
    }
    pub fn to_byte(self) -> u8 {
        (u8::from(self.dup) << 7)
            | self.qos.bits()
            | (u8::from(self.retain) << 4)
            | (u8::from(self.will) << 3)
            | (u8::from(self.clean_session) << 2)
            | self.topic_id_type.bits()
    }
}

/// Return codes of CONNACK, REGACK, PUBACK, SUBACK, WILLTOPICRESP, WILLMSGRESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnCode {
    Accepted,
    Congestion,
    InvalidTopicId,
    NotSupported,
    /// Values 0x04..=0xFF are reserved; kept so a peer's odd code is not a decode error.
    Reserved(u8),
}

impl ReturnCode {
    pub fn from_byte(b: u8) -> ReturnCode {
        match b {
            0 => ReturnCode::Accepted,
            1 => ReturnCode::Congestion,
            2 => ReturnCode::InvalidTopicId,
            3 => ReturnCode::NotSupported,
            x => ReturnCode::Reserved(x),
        }
    }
    pub fn to_byte(self) -> u8 {
        match self {
            ReturnCode::Accepted => 0,
            ReturnCode::Congestion => 1,
            ReturnCode::InvalidTopicId => 2,
            ReturnCode::NotSupported => 3,
            ReturnCode::Reserved(x) => x,
        }
    }
}

/// Topic of SUBSCRIBE / UNSUBSCRIBE: a name (may hold wildcards) or a 2-byte id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Predefined(u16),
    Short([u8; 2]),
}

/// Will topic with its QoS and retain flag (WILLTOPIC / WILLTOPICUPD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillTopic {
    pub qos: Qos,
    pub retain: bool,
    pub topic: String,
}

/// One MQTT-SN 1.2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Advertise {
        gw_id: u8,
        duration: u16,
    },
    SearchGw {
        radius: u8,
    },
    GwInfo {
        gw_id: u8,
        gw_addr: Vec<u8>,
    },
    Connect {
        flags: Flags,
        protocol_id: u8,
        duration: u16,
        client_id: String,
    },
    ConnAck {
        rc: ReturnCode,
    },
    WillTopicReq,
    /// `None` is the empty WILLTOPIC (no will / delete will).
    WillTopic {
        will: Option<WillTopic>,
    },
    WillMsgReq,
    WillMsg {
        msg: Vec<u8>,
    },
    Register {
        topic_id: u16,
        msg_id: u16,
        topic: String,
    },
    RegAck {
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    Publish {
        flags: Flags,
        topic_id: u16,
        msg_id: u16,
        data: Vec<u8>,
    },
    PubAck {
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    PubComp {
        msg_id: u16,
    },
    PubRec {
        msg_id: u16,
    },
    PubRel {
        msg_id: u16,
    },
    Subscribe {
        dup: bool,
        qos: Qos,
        msg_id: u16,
        topic: TopicRef,
    },
    SubAck {
        qos: Qos,
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    Unsubscribe {
        msg_id: u16,
        topic: TopicRef,
    },
    UnsubAck {
        msg_id: u16,
    },
    PingReq {
        client_id: Option<String>,
    },
    PingResp,
    Disconnect {
        duration: Option<u16>,
    },
    WillTopicUpd {
        will: Option<WillTopic>,
    },
    WillTopicResp {
        rc: ReturnCode,
    },
    WillMsgUpd {
        msg: Vec<u8>,
    },
    WillMsgResp {
        rc: ReturnCode,
    },
}

impl Packet {
    /// Message type octet.
    pub fn msg_type(&self) -> u8 {
        match self {
            Packet::Advertise { .. } => 0x00,
            Packet::SearchGw { .. } => 0x01,
            Packet::GwInfo { .. } => 0x02,
            Packet::Connect { .. } => 0x04,
            Packet::ConnAck { .. } => 0x05,
            Packet::WillTopicReq => 0x06,
            Packet::WillTopic { .. } => 0x07,
            Packet::WillMsgReq => 0x08,
            Packet::WillMsg { .. } => 0x09,
            Packet::Register { .. } => 0x0A,
            Packet::RegAck { .. } => 0x0B,
            Packet::Publish { .. } => 0x0C,
            Packet::PubAck { .. } => 0x0D,
            Packet::PubComp { .. } => 0x0E,
            Packet::PubRec { .. } => 0x0F,
            Packet::PubRel { .. } => 0x10,
            Packet::Subscribe { .. } => 0x12,
            Packet::SubAck { .. } => 0x13,
            Packet::Unsubscribe { .. } => 0x14,
            Packet::UnsubAck { .. } => 0x15,
            Packet::PingReq { .. } => 0x16,
            Packet::PingResp => 0x17,
            Packet::Disconnect { .. } => 0x18,
            Packet::WillTopicUpd { .. } => 0x1A,
            Packet::WillTopicResp { .. } => 0x1B,
            Packet::WillMsgUpd { .. } => 0x1C,
            Packet::WillMsgResp { .. } => 0x1D,
        }
    }

    /// Short name for logs and metric labels.
    pub fn name(&self) -> &'static str {
        type_name(self.msg_type())
    }
}

/// Name of a message type octet ("unknown" if not one of MQTT-SN 1.2).
pub fn type_name(t: u8) -> &'static str {
    match t {
        0x00 => "advertise",
        0x01 => "searchgw",
        0x02 => "gwinfo",
        0x04 => "connect",
        0x05 => "connack",
        0x06 => "willtopicreq",
        0x07 => "willtopic",
        0x08 => "willmsgreq",
        0x09 => "willmsg",
        0x0A => "register",
        0x0B => "regack",
        0x0C => "publish",
        0x0D => "puback",
        0x0E => "pubcomp",
        0x0F => "pubrec",
        0x10 => "pubrel",
        0x12 => "subscribe",
        0x13 => "suback",
        0x14 => "unsubscribe",
        0x15 => "unsuback",
        0x16 => "pingreq",
        0x17 => "pingresp",
        0x18 => "disconnect",
        0x1A => "willtopicupd",
        0x1B => "willtopicresp",
        0x1C => "willmsgupd",
        0x1D => "willmsgresp",
        0xFE => "encapsulated",
        _ => "unknown",
    }
}

/// Forwarder encapsulation header (spec 5.5): which radio node a message came from / goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Encapsulation {
    /// Ctrl octet; bits 0-1 are the broadcast radius.
    pub ctrl: u8,
    pub node_id: Vec<u8>,
}

/// A whole datagram: an optional forwarder header and one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub encap: Option<Encapsulation>,
    pub packet: Packet,
}
