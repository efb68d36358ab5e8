//! Packets -> bytes.

use super::{
    CodecError, Datagram, ENCAPSULATED, Flags, MAX_LEN, Packet, TopicIdType, TopicRef, WillTopic,
};

/// Encodes a datagram (forwarder header included when present) into `out`.
pub fn encode(d: &Datagram, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if let Some(e) = &d.encap {
        let hlen = 3 + e.node_id.len();
        if hlen > 255 {
            return Err(CodecError::TooLong(hlen));
        }
        out.push(hlen as u8);
        out.push(ENCAPSULATED);
        out.push(e.ctrl);
        out.extend_from_slice(&e.node_id);
    }
    encode_packet(&d.packet, out)
}

/// Encodes one message into a fresh buffer.
pub fn encode_to_vec(p: &Packet) -> Result<Vec<u8>, CodecError> {
    let mut v = Vec::with_capacity(16);
    encode_packet(p, &mut v)?;
    Ok(v)
}

fn will_body(w: &Option<WillTopic>, body: &mut Vec<u8>) {
    if let Some(w) = w {
        let f = Flags {
            qos: w.qos,
            retain: w.retain,
            ..Flags::default()
        };
        body.push(f.to_byte());
        body.extend_from_slice(w.topic.as_bytes());
    }
}

fn topic_ref(flags: Flags, t: &TopicRef, body: &mut Vec<u8>) {
    let tt = match t {
        TopicRef::Name(_) => TopicIdType::Normal,
        TopicRef::Predefined(_) => TopicIdType::Predefined,
        TopicRef::Short(_) => TopicIdType::Short,
    };
    body.push(
        Flags {
            topic_id_type: tt,
            ..flags
        }
        .to_byte(),
    );
}

fn topic_ref_tail(t: &TopicRef, body: &mut Vec<u8>) {
    match t {
        TopicRef::Name(n) => body.extend_from_slice(n.as_bytes()),
        TopicRef::Predefined(id) => body.extend_from_slice(&id.to_be_bytes()),
        TopicRef::Short(s) => body.extend_from_slice(s),
    }
}

/// Encodes one message (no forwarder header) into `out`.
pub fn encode_packet(p: &Packet, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut b: Vec<u8> = Vec::new();
    match p {
        Packet::Advertise { gw_id, duration } => {
            b.push(*gw_id);
            b.extend_from_slice(&duration.to_be_bytes());
        }
        Packet::SearchGw { radius } => b.push(*radius),
        Packet::GwInfo { gw_id, gw_addr } => {
            b.push(*gw_id);
            b.extend_from_slice(gw_addr);
        }
        Packet::Connect {
            flags,
            protocol_id,
            duration,
            client_id,
        } => {
            b.push(flags.to_byte());
            b.push(*protocol_id);
            b.extend_from_slice(&duration.to_be_bytes());
            b.extend_from_slice(client_id.as_bytes());
        }
        Packet::ConnAck { rc } | Packet::WillTopicResp { rc } | Packet::WillMsgResp { rc } => {
            b.push(rc.to_byte())
        }
        Packet::WillTopicReq | Packet::WillMsgReq | Packet::PingResp => {}
        Packet::WillTopic { will } | Packet::WillTopicUpd { will } => will_body(will, &mut b),
        Packet::WillMsg { msg } | Packet::WillMsgUpd { msg } => b.extend_from_slice(msg),
        Packet::Register {
            topic_id,
            msg_id,
            topic,
        } => {
            b.extend_from_slice(&topic_id.to_be_bytes());
            b.extend_from_slice(&msg_id.to_be_bytes());
            b.extend_from_slice(topic.as_bytes());
        }
        Packet::RegAck {
            topic_id,
            msg_id,
            rc,
        }
        | Packet::PubAck {
            topic_id,
            msg_id,
            rc,
        } => {
            b.extend_from_slice(&topic_id.to_be_bytes());
            b.extend_from_slice(&msg_id.to_be_bytes());
            b.push(rc.to_byte());
        }
        Packet::Publish {
            flags,
            topic_id,
            msg_id,
            data,
        } => {
            b.push(flags.to_byte());
            b.extend_from_slice(&topic_id.to_be_bytes());
            b.extend_from_slice(&msg_id.to_be_bytes());
            b.extend_from_slice(data);
        }
        Packet::PubComp { msg_id }
        | Packet::PubRec { msg_id }
        | Packet::PubRel { msg_id }
        | Packet::UnsubAck { msg_id } => b.extend_from_slice(&msg_id.to_be_bytes()),
        Packet::Subscribe {
            dup,
            qos,
            msg_id,
            topic,
        } => {
            let f = Flags {
                dup: *dup,
                qos: *qos,
                ..Flags::default()
            };
            topic_ref(f, topic, &mut b);
            b.extend_from_slice(&msg_id.to_be_bytes());
            topic_ref_tail(topic, &mut b);
        }
        Packet::SubAck {
            qos,
            topic_id,
            msg_id,
            rc,
        } => {
            b.push(
                Flags {
                    qos: *qos,
                    ..Flags::default()
                }
                .to_byte(),
            );
            b.extend_from_slice(&topic_id.to_be_bytes());
            b.extend_from_slice(&msg_id.to_be_bytes());
            b.push(rc.to_byte());
        }
        Packet::Unsubscribe { msg_id, topic } => {
            topic_ref(Flags::default(), topic, &mut b);
            b.extend_from_slice(&msg_id.to_be_bytes());
            topic_ref_tail(topic, &mut b);
        }
        Packet::PingReq { client_id } => {
            if let Some(c) = client_id {
                b.extend_from_slice(c.as_bytes());
            }
        }
        Packet::Disconnect { duration } => {
            if let Some(d) = duration {
                b.extend_from_slice(&d.to_be_bytes());
            }
        }
    }
    let short = b.len() + 2;
    if short <= 255 {
        out.push(short as u8);
    } else {
        let long = b.len() + 4;
        if long > MAX_LEN {
            return Err(CodecError::TooLong(long));
        }
        out.push(0x01);
        out.extend_from_slice(&(long as u16).to_be_bytes());
    }
    out.push(p.msg_type());
    out.extend_from_slice(&b);
    Ok(())
}
