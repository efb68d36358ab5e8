//! Bytes -> packets, strictly bounded.

use super::{
    CodecError, Datagram, ENCAPSULATED, Encapsulation, Flags, Packet, ReturnCode, TopicIdType,
    TopicRef, WillTopic,
};

/// Decodes one datagram (with an optional forwarder header). The length fields must match the
/// datagram exactly: trailing garbage is as suspicious as a short read.
pub fn decode(buf: &[u8]) -> Result<Datagram, CodecError> {
    if buf.len() >= 2 && buf[1] == ENCAPSULATED && buf[0] != 0x01 {
        let hlen = usize::from(buf[0]);
        if hlen < 3 {
            return Err(CodecError::BadLength(hlen));
        }
        if buf.len() < hlen {
            return Err(CodecError::Truncated(buf.len()));
        }
        let encap = Encapsulation {
            ctrl: buf[2],
            node_id: buf[3..hlen].to_vec(),
        };
        let inner = &buf[hlen..];
        if inner.len() >= 2 && inner[1] == ENCAPSULATED {
            return Err(CodecError::NestedEncapsulation);
        }
        let packet = decode_packet(inner)?;
        return Ok(Datagram {
            encap: Some(encap),
            packet,
        });
    }
    Ok(Datagram {
        encap: None,
        packet: decode_packet(buf)?,
    })
}

/// Splits the length header: returns (declared total length, header size).
pub(crate) fn read_length(buf: &[u8]) -> Result<(usize, usize), CodecError> {
    match buf.first() {
        None => Err(CodecError::Truncated(0)),
        Some(0x01) => {
            if buf.len() < 3 {
                return Err(CodecError::Truncated(buf.len()));
            }
            let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
            if len < 4 {
                return Err(CodecError::BadLength(len));
            }
            Ok((len, 3))
        }
        Some(&b) => {
            let len = usize::from(b);
            if len < 2 {
                return Err(CodecError::BadLength(len));
            }
            Ok((len, 1))
        }
    }
}

/// Decodes one message without forwarder header.
pub fn decode_packet(buf: &[u8]) -> Result<Packet, CodecError> {
    let (len, hdr) = read_length(buf)?;
    if len != buf.len() {
        return Err(if len > buf.len() {
            CodecError::Truncated(buf.len())
        } else {
            CodecError::LengthMismatch {
                declared: len,
                actual: buf.len(),
            }
        });
    }
    if buf.len() <= hdr {
        return Err(CodecError::Truncated(buf.len()));
    }
    let t = buf[hdr];
    let body = &buf[hdr + 1..];
    decode_body(t, body)
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn utf8(b: &[u8]) -> Result<String, CodecError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| CodecError::InvalidUtf8)
}

fn need(kind: &'static str, body: &[u8], ok: bool) -> Result<(), CodecError> {
    if ok {
        Ok(())
    } else {
        Err(CodecError::BadBody {
            kind,
            len: body.len(),
        })
    }
}

fn will(kind: &'static str, body: &[u8]) -> Result<Option<WillTopic>, CodecError> {
    if body.is_empty() {
        return Ok(None);
    }
    need(kind, body, body.len() >= 2)?;
    let f = Flags::from_byte(body[0] & !0x03)?;
    Ok(Some(WillTopic {
        qos: f.qos,
        retain: f.retain,
        topic: utf8(&body[1..])?,
    }))
}

fn topic_ref(kind: &'static str, tt: TopicIdType, rest: &[u8]) -> Result<TopicRef, CodecError> {
    match tt {
        TopicIdType::Normal => {
            need(kind, rest, !rest.is_empty())?;
            Ok(TopicRef::Name(utf8(rest)?))
        }
        TopicIdType::Predefined => {
            need(kind, rest, rest.len() == 2)?;
            Ok(TopicRef::Predefined(u16_at(rest, 0)))
        }
        TopicIdType::Short => {
            need(kind, rest, rest.len() == 2)?;
            Ok(TopicRef::Short([rest[0], rest[1]]))
        }
    }
}

fn decode_body(t: u8, b: &[u8]) -> Result<Packet, CodecError> {
    let n = b.len();
    let p = match t {
        0x00 => {
            need("advertise", b, n == 3)?;
            Packet::Advertise {
                gw_id: b[0],
                duration: u16_at(b, 1),
            }
        }
        0x01 => {
            need("searchgw", b, n == 1)?;
            Packet::SearchGw { radius: b[0] }
        }
        0x02 => {
            need("gwinfo", b, n >= 1)?;
            Packet::GwInfo {
                gw_id: b[0],
                gw_addr: b[1..].to_vec(),
            }
        }
        0x04 => {
            need("connect", b, n >= 4)?;
            Packet::Connect {
                flags: Flags::from_byte(b[0])?,
                protocol_id: b[1],
                duration: u16_at(b, 2),
                client_id: utf8(&b[4..])?,
            }
        }
        0x05 => {
            need("connack", b, n == 1)?;
            Packet::ConnAck {
                rc: ReturnCode::from_byte(b[0]),
            }
        }
        0x06 => {
            need("willtopicreq", b, n == 0)?;
            Packet::WillTopicReq
        }
        0x07 => Packet::WillTopic {
            will: will("willtopic", b)?,
        },
        0x08 => {
            need("willmsgreq", b, n == 0)?;
            Packet::WillMsgReq
        }
        0x09 => Packet::WillMsg { msg: b.to_vec() },
        0x0A => {
            need("register", b, n >= 5)?;
            Packet::Register {
                topic_id: u16_at(b, 0),
                msg_id: u16_at(b, 2),
                topic: utf8(&b[4..])?,
            }
        }
        0x0B => {
            need("regack", b, n == 5)?;
            Packet::RegAck {
                topic_id: u16_at(b, 0),
                msg_id: u16_at(b, 2),
                rc: ReturnCode::from_byte(b[4]),
            }
        }
        0x0C => {
            need("publish", b, n >= 5)?;
            Packet::Publish {
                flags: Flags::from_byte(b[0])?,
                topic_id: u16_at(b, 1),
                msg_id: u16_at(b, 3),
                data: b[5..].to_vec(),
            }
        }
        0x0D => {
            need("puback", b, n == 5)?;
            Packet::PubAck {
                topic_id: u16_at(b, 0),
                msg_id: u16_at(b, 2),
                rc: ReturnCode::from_byte(b[4]),
            }
        }
        0x0E | 0x0F | 0x10 | 0x15 => {
            need(super::type_name(t), b, n == 2)?;
            let msg_id = u16_at(b, 0);
            match t {
                0x0E => Packet::PubComp { msg_id },
                0x0F => Packet::PubRec { msg_id },
                0x10 => Packet::PubRel { msg_id },
                _ => Packet::UnsubAck { msg_id },
            }
        }
        0x12 => {
            need("subscribe", b, n >= 4)?;
            let f = Flags::from_byte(b[0])?;
            Packet::Subscribe {
                dup: f.dup,
                qos: f.qos,
                msg_id: u16_at(b, 1),
                topic: topic_ref("subscribe", f.topic_id_type, &b[3..])?,
            }
        }
        0x13 => {
            need("suback", b, n == 6)?;
            Packet::SubAck {
                qos: Flags::from_byte(b[0] & !0x03)?.qos,
                topic_id: u16_at(b, 1),
                msg_id: u16_at(b, 3),
                rc: ReturnCode::from_byte(b[5]),
            }
        }
        0x14 => {
            need("unsubscribe", b, n >= 4)?;
            let f = Flags::from_byte(b[0])?;
            Packet::Unsubscribe {
                msg_id: u16_at(b, 1),
                topic: topic_ref("unsubscribe", f.topic_id_type, &b[3..])?,
            }
        }
        0x16 => Packet::PingReq {
            client_id: if b.is_empty() { None } else { Some(utf8(b)?) },
        },
        0x17 => {
            need("pingresp", b, n == 0)?;
            Packet::PingResp
        }
        0x18 => {
            need("disconnect", b, n == 0 || n == 2)?;
            Packet::Disconnect {
                duration: (n == 2).then(|| u16_at(b, 0)),
            }
        }
        0x1A => Packet::WillTopicUpd {
            will: will("willtopicupd", b)?,
        },
        0x1B | 0x1D => {
            need(super::type_name(t), b, n == 1)?;
            let rc = ReturnCode::from_byte(b[0]);
            if t == 0x1B {
                Packet::WillTopicResp { rc }
            } else {
                Packet::WillMsgResp { rc }
            }
        }
        0x1C => Packet::WillMsgUpd { msg: b.to_vec() },
        ENCAPSULATED => return Err(CodecError::NestedEncapsulation),
        other => return Err(CodecError::UnknownType(other)),
    };
    Ok(p)
}
