use super::*;
use proptest::prelude::*;

fn rt(p: Packet) {
    let bytes = encode_to_vec(&p).unwrap();
    assert_eq!(decode_packet(&bytes).unwrap(), p, "bytes {bytes:02x?}");
}

#[test]
fn connect_known_bytes() {
    // Example from the mqttsn-packet docs: will + clean, duration 1800, "test".
    let b = [10, 4, 12, 1, 7, 8, b't', b'e', b's', b't'];
    let p = decode_packet(&b).unwrap();
    match &p {
        Packet::Connect {
            flags,
            protocol_id,
            duration,
            client_id,
        } => {
            assert!(flags.will && flags.clean_session);
            assert_eq!(
                (*protocol_id, *duration, client_id.as_str()),
                (1, 1800, "test")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(encode_to_vec(&p).unwrap(), b);
}

#[test]
fn publish_flags_bits() {
    let f = Flags::from_byte(0b1111_0010).unwrap();
    assert!(f.dup && f.retain);
    assert_eq!(f.qos, Qos::MinusOne);
    assert_eq!(f.topic_id_type, TopicIdType::Short);
    assert_eq!(f.to_byte(), 0b1111_0010);
    assert_eq!(
        Flags::from_byte(0x03),
        Err(CodecError::ReservedTopicIdType(0x03))
    );
}

#[test]
fn long_length_form() {
    let p = Packet::Publish {
        flags: Flags::default(),
        topic_id: 1,
        msg_id: 0,
        data: vec![7; 300],
    };
    let b = encode_to_vec(&p).unwrap();
    assert_eq!(b[0], 0x01);
    assert_eq!(u16::from_be_bytes([b[1], b[2]]) as usize, b.len());
    assert_eq!(decode_packet(&b).unwrap(), p);
    // exactly 255 bytes still uses the short form
    let p = Packet::WillMsg { msg: vec![1; 253] };
    let b = encode_to_vec(&p).unwrap();
    assert_eq!((b[0], b.len()), (255, 255));
    rt(p);
}

#[test]
fn too_long_is_an_error() {
    let p = Packet::WillMsg {
        msg: vec![0; MAX_LEN],
    };
    assert!(matches!(encode_to_vec(&p), Err(CodecError::TooLong(_))));
}

#[test]
fn lying_lengths() {
    // declares 10, has 4
    assert_eq!(
        decode_packet(&[10, 0x18, 0, 5]),
        Err(CodecError::Truncated(4))
    );
    // declares 2, has 4 (trailing garbage)
    assert_eq!(
        decode_packet(&[2, 0x17, 0, 0]),
        Err(CodecError::LengthMismatch {
            declared: 2,
            actual: 4
        })
    );
    assert_eq!(decode_packet(&[0, 0x17]), Err(CodecError::BadLength(0)));
    assert_eq!(
        decode_packet(&[1, 0, 3, 0x17]),
        Err(CodecError::BadLength(3))
    );
    assert_eq!(
        decode_packet(&[1, 0xff, 0xff, 0x17]),
        Err(CodecError::Truncated(4))
    );
    assert_eq!(decode_packet(&[1, 0]), Err(CodecError::Truncated(2)));
    assert_eq!(decode_packet(&[]), Err(CodecError::Truncated(0)));
}

#[test]
fn truncated_bodies() {
    // PUBLISH needs flags + topic id + msg id
    assert!(matches!(
        decode_packet(&[5, 0x0C, 0, 0, 1]),
        Err(CodecError::BadBody {
            kind: "publish",
            ..
        })
    ));
    assert!(matches!(
        decode_packet(&[4, 0x0B, 0, 1]),
        Err(CodecError::BadBody { kind: "regack", .. })
    ));
    assert!(matches!(
        decode_packet(&[3, 0x18, 1]),
        Err(CodecError::BadBody {
            kind: "disconnect",
            ..
        })
    ));
    // SUBSCRIBE predefined with a 3-byte id
    assert!(matches!(
        decode_packet(&[8, 0x12, 0x01, 0, 1, 0, 1, 2]),
        Err(CodecError::BadBody {
            kind: "subscribe",
            ..
        })
    ));
    // CONNECT without its fixed part
    assert!(matches!(
        decode_packet(&[4, 0x04, 0, 1]),
        Err(CodecError::BadBody {
            kind: "connect",
            ..
        })
    ));
}

#[test]
fn unknown_types_and_bad_utf8() {
    for t in [0x03u8, 0x11, 0x19, 0x1E, 0x80, 0xFD, 0xFF] {
        assert_eq!(decode_packet(&[2, t]), Err(CodecError::UnknownType(t)));
    }
    assert_eq!(
        decode_packet(&[7, 0x04, 0, 1, 0, 10, 0xff]),
        Err(CodecError::InvalidUtf8)
    );
}

#[test]
fn encapsulation() {
    let d = Datagram {
        encap: Some(Encapsulation {
            ctrl: 1,
            node_id: vec![0xAB, 0xCD],
        }),
        packet: Packet::PingReq { client_id: None },
    };
    let mut b = Vec::new();
    encode(&d, &mut b).unwrap();
    assert_eq!(b, [5, 0xFE, 1, 0xAB, 0xCD, 2, 0x16]);
    assert_eq!(decode(&b).unwrap(), d);
    // header longer than the datagram
    assert_eq!(decode(&[9, 0xFE, 1, 2]), Err(CodecError::Truncated(4)));
    assert_eq!(decode(&[2, 0xFE]), Err(CodecError::BadLength(2)));
    // nested
    assert_eq!(
        decode(&[3, 0xFE, 0, 3, 0xFE, 0, 2, 0x17]),
        Err(CodecError::NestedEncapsulation)
    );
    // inner message with a lying length
    assert_eq!(
        decode(&[3, 0xFE, 0, 9, 0x17]),
        Err(CodecError::Truncated(2))
    );
    // 0xFE as a plain message type is rejected (it only exists as a header)
    assert_eq!(
        decode_packet(&[3, 0xFE, 0]),
        Err(CodecError::NestedEncapsulation)
    );
    // three-byte length whose high byte is 0xFE is a long message, not an encapsulation
    assert!(matches!(
        decode(&[1, 0xFE, 0, 0x17]),
        Err(CodecError::Truncated(4))
    ));
}

#[test]
fn empty_will_topic_and_optional_fields() {
    rt(Packet::WillTopic { will: None });
    assert_eq!(
        encode_to_vec(&Packet::WillTopic { will: None }).unwrap(),
        [2, 7]
    );
    rt(Packet::Disconnect { duration: None });
    rt(Packet::Disconnect {
        duration: Some(600),
    });
    rt(Packet::PingReq {
        client_id: Some("node-1".into()),
    });
    assert_eq!(
        decode_packet(&[2, 0x16]).unwrap(),
        Packet::PingReq { client_id: None }
    );
}

#[test]
fn every_type_name_is_known() {
    for t in [
        0x00u8, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
        0x10, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x1A, 0x1B, 0x1C, 0x1D,
    ] {
        assert_ne!(type_name(t), "unknown");
    }
}

fn qos() -> impl Strategy<Value = Qos> {
    prop_oneof![
        Just(Qos::MinusOne),
        Just(Qos::Zero),
        Just(Qos::One),
        Just(Qos::Two)
    ]
}

fn rc() -> impl Strategy<Value = ReturnCode> {
    prop_oneof![
        Just(ReturnCode::Accepted),
        Just(ReturnCode::Congestion),
        Just(ReturnCode::InvalidTopicId),
        Just(ReturnCode::NotSupported),
        (4u8..=255).prop_map(ReturnCode::Reserved),
    ]
}

fn flags() -> impl Strategy<Value = Flags> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(TopicIdType::Normal),
            Just(TopicIdType::Predefined),
            Just(TopicIdType::Short)
        ],
    )
        .prop_map(
            |(dup, qos, retain, will, clean_session, topic_id_type)| Flags {
                dup,
                qos,
                retain,
                will,
                clean_session,
                topic_id_type,
            },
        )
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9/+#äö]{1,40}"
}

fn topic_ref() -> impl Strategy<Value = TopicRef> {
    prop_oneof![
        name().prop_map(TopicRef::Name),
        any::<u16>().prop_map(TopicRef::Predefined),
        any::<[u8; 2]>().prop_map(TopicRef::Short),
    ]
}

fn will() -> impl Strategy<Value = Option<WillTopic>> {
    proptest::option::of(
        (qos(), any::<bool>(), name()).prop_map(|(qos, retain, topic)| WillTopic {
            qos,
            retain,
            topic,
        }),
    )
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..400)
}

fn packet() -> impl Strategy<Value = Packet> {
    let id = any::<u16>;
    prop_oneof![
        (any::<u8>(), id()).prop_map(|(gw_id, duration)| Packet::Advertise { gw_id, duration }),
        any::<u8>().prop_map(|radius| Packet::SearchGw { radius }),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(gw_id, gw_addr)| Packet::GwInfo { gw_id, gw_addr }),
        (flags(), any::<u8>(), id(), "[a-zA-Z0-9-]{0,23}").prop_map(
            |(flags, protocol_id, duration, client_id)| Packet::Connect {
                flags,
                protocol_id,
                duration,
                client_id
            }
        ),
        rc().prop_map(|rc| Packet::ConnAck { rc }),
        Just(Packet::WillTopicReq),
        will().prop_map(|will| Packet::WillTopic { will }),
        Just(Packet::WillMsgReq),
        data().prop_map(|msg| Packet::WillMsg { msg }),
        (id(), id(), name()).prop_map(|(topic_id, msg_id, topic)| Packet::Register {
            topic_id,
            msg_id,
            topic
        }),
        (id(), id(), rc()).prop_map(|(topic_id, msg_id, rc)| Packet::RegAck {
            topic_id,
            msg_id,
            rc
        }),
        (flags(), id(), id(), data()).prop_map(|(flags, topic_id, msg_id, data)| {
            Packet::Publish {
                flags,
                topic_id,
                msg_id,
                data,
            }
        }),
        (id(), id(), rc()).prop_map(|(topic_id, msg_id, rc)| Packet::PubAck {
            topic_id,
            msg_id,
            rc
        }),
        id().prop_map(|msg_id| Packet::PubComp { msg_id }),
        id().prop_map(|msg_id| Packet::PubRec { msg_id }),
        id().prop_map(|msg_id| Packet::PubRel { msg_id }),
        (any::<bool>(), qos(), id(), topic_ref()).prop_map(|(dup, qos, msg_id, topic)| {
            Packet::Subscribe {
                dup,
                qos,
                msg_id,
                topic,
            }
        }),
        (qos(), id(), id(), rc()).prop_map(|(qos, topic_id, msg_id, rc)| Packet::SubAck {
            qos,
            topic_id,
            msg_id,
            rc
        }),
        (id(), topic_ref()).prop_map(|(msg_id, topic)| Packet::Unsubscribe { msg_id, topic }),
        id().prop_map(|msg_id| Packet::UnsubAck { msg_id }),
        proptest::option::of("[a-z0-9]{1,23}").prop_map(|client_id| Packet::PingReq { client_id }),
        Just(Packet::PingResp),
        proptest::option::of(id()).prop_map(|duration| Packet::Disconnect { duration }),
        will().prop_map(|will| Packet::WillTopicUpd { will }),
        rc().prop_map(|rc| Packet::WillTopicResp { rc }),
        data().prop_map(|msg| Packet::WillMsgUpd { msg }),
        rc().prop_map(|rc| Packet::WillMsgResp { rc }),
    ]
}

proptest! {
    #[test]
    fn round_trip_every_packet(p in packet(), encap in proptest::option::of(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(ctrl, node_id)| Encapsulation { ctrl, node_id }))) {
        let d = Datagram { encap, packet: p };
        let mut b = Vec::new();
        encode(&d, &mut b).unwrap();
        prop_assert_eq!(decode(&b).unwrap(), d);
    }

    #[test]
    fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&b);
    }

    #[test]
    fn truncation_is_always_an_error(p in packet()) {
        let b = encode_to_vec(&p).unwrap();
        for cut in 0..b.len() {
            prop_assert!(decode_packet(&b[..cut]).is_err());
        }
    }
}
