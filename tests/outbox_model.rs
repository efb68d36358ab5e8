//! Model-based property test of the outbox: random enqueue / hand-out / ack / reconnect /
//! sync / crash-reopen / close-reopen sequences never lose an unacknowledged message that was
//! durable, never hand out messages out of order, and never resurrect an acknowledged message
//! except after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edgebus::message::{Message, QoS};
use edgebus::outbox::{BufferConfig, Durability, Outbox};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push {
        topic: u8,
        len: u16,
        confirmed: bool,
    },
    Take(usize),
    Ack(usize),
    Reconnect,
    LinkDown,
    Sync,
    Pause,
    Crash,
    CloseReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, 0u16..1500, any::<bool>())
            .prop_map(|(topic, len, confirmed)| Op::Push { topic, len, confirmed }),
        4 => (1usize..30).prop_map(Op::Take),
        4 => (0usize..64).prop_map(Op::Ack),
        1 => Just(Op::Reconnect),
        1 => Just(Op::LinkDown),
        1 => Just(Op::Sync),
        1 => Just(Op::Pause),
        1 => Just(Op::Crash),
        1 => Just(Op::CloseReopen),
    ]
}

struct Model {
    /// seq -> (topic, id) of everything accepted.
    pushed: BTreeMap<u64, (String, u64)>,
    acked: BTreeSet<u64>,
    /// Known to be on disk (sync, confirmed push, close).
    durable: BTreeSet<u64>,
    /// Not durable when a crash happened: may be gone.
    may_be_lost: BTreeSet<u64>,
    /// Acknowledged before a crash: may come back once (at-least-once).
    may_repeat: BTreeSet<u64>,
    inflight: Vec<u64>,
    last_handed: Option<u64>,
    next_id: u64,
    /// What happened, for the failure message.
    log: Vec<String>,
}

fn payload(id: u64, len: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(8 + len as usize, 0x5a);
    p
}

fn check_batch(m: &mut Model, batch: &[Message]) -> Result<(), TestCaseError> {
    for msg in batch {
        let Some((topic, id)) = m.pushed.get(&msg.seq) else {
            return Err(TestCaseError::fail(format!("unknown seq {}", msg.seq)));
        };
        prop_assert_eq!(&msg.topic, topic);
        prop_assert_eq!(&msg.payload[..8], &id.to_be_bytes()[..]);
        if let Some(last) = m.last_handed {
            prop_assert!(msg.seq > last, "out of order: {} after {}", msg.seq, last);
        }
        m.last_handed = Some(msg.seq);
        if m.acked.contains(&msg.seq) {
            prop_assert!(
                m.may_repeat.contains(&msg.seq),
                "acked seq {} came back; log:\n{}",
                msg.seq,
                m.log.join("\n")
            );
        }
        m.inflight.push(msg.seq);
    }
    Ok(())
}

fn run(durability: Durability, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            durability,
            commit_interval: Some(Duration::from_millis(5)),
            spill_after: Duration::from_millis(30),
            memory_limit: 64 * 1024,
            ..Default::default()
        };
        let mut o = Outbox::open(dir.path(), &cfg).unwrap();
        o.set_connected(true);
        let mut m = Model {
            pushed: BTreeMap::new(),
            acked: BTreeSet::new(),
            durable: BTreeSet::new(),
            may_be_lost: BTreeSet::new(),
            may_repeat: BTreeSet::new(),
            inflight: Vec::new(),
            last_handed: None,
            next_id: 0,
            log: Vec::new(),
        };
        for op in ops {
            let before = format!("{op:?}");
            let depth = o.stats().depth;
            m.log.push(format!(
                "{before} (depth {depth}, inflight {:?})",
                m.inflight
            ));
            match op {
                Op::Push {
                    topic,
                    len,
                    confirmed,
                } => {
                    let id = m.next_id;
                    m.next_id += 1;
                    let t = format!("t/{topic}");
                    let msg = Message::new(t.clone(), payload(id, len), QoS::AtLeastOnce, false);
                    let seq = if confirmed {
                        let s = o.push_confirmed(msg).await.unwrap();
                        if durability == Durability::Always {
                            m.durable.insert(s);
                        }
                        s
                    } else {
                        o.push(msg).await.unwrap()
                    };
                    prop_assert!(!m.pushed.contains_key(&seq), "seq {} reused", seq);
                    if let Some((&max, _)) = m.pushed.iter().next_back() {
                        prop_assert!(seq > max);
                    }
                    m.pushed.insert(seq, (t, id));
                }
                Op::Take(n) => {
                    let b = o.next_batch(n);
                    m.log.push(format!(
                        "  -> {:?}",
                        b.iter().map(|x| x.seq).collect::<Vec<_>>()
                    ));
                    prop_assert!(b.len() <= n);
                    check_batch(&mut m, &b)?;
                }
                Op::Ack(i) => {
                    if !m.inflight.is_empty() {
                        let seq = m.inflight.remove(i % m.inflight.len());
                        o.ack(seq);
                        m.log.push(format!("  ack {seq}"));
                        m.acked.insert(seq);
                    }
                }
                Op::Reconnect => {
                    o.rewind();
                    m.inflight.clear();
                    m.last_handed = None;
                }
                Op::LinkDown => {
                    o.set_connected(false);
                    o.rewind();
                    m.inflight.clear();
                    m.last_handed = None;
                    o.set_connected(true);
                }
                Op::Sync => {
                    o.sync().await.unwrap();
                    m.durable.extend(m.pushed.keys().copied());
                }
                Op::Pause => tokio::time::sleep(Duration::from_millis(40)).await,
                Op::Crash => {
                    o.simulate_crash();
                    for &s in m.pushed.keys() {
                        if !m.durable.contains(&s) && !m.acked.contains(&s) {
                            m.may_be_lost.insert(s);
                        }
                    }
                    m.may_repeat.extend(m.acked.iter().copied());
                    o = Outbox::open(dir.path(), &cfg).unwrap();
                    o.set_connected(true);
                    m.inflight.clear();
                    m.last_handed = None;
                }
                Op::CloseReopen => {
                    o.close().await.unwrap();
                    m.durable.extend(m.pushed.keys().copied());
                    o = Outbox::open(dir.path(), &cfg).unwrap();
                    o.set_connected(true);
                    m.inflight.clear();
                    m.last_handed = None;
                }
            }
        }
        // Final replay: everything unacknowledged and not legitimately lost comes out, in order.
        o.sync().await.unwrap();
        o.rewind();
        m.inflight.clear();
        m.last_handed = None;
        let mut delivered = BTreeSet::new();
        loop {
            let b = o.next_batch(50);
            if b.is_empty() {
                break;
            }
            check_batch(&mut m, &b)?;
            for msg in b {
                delivered.insert(msg.seq);
                o.ack(msg.seq);
            }
        }
        for &s in m.pushed.keys() {
            if !m.acked.contains(&s) && !m.may_be_lost.contains(&s) {
                prop_assert!(delivered.contains(&s), "seq {} lost", s);
            }
        }
        prop_assert_eq!(o.stats().depth, 0);
        prop_assert_eq!(o.stats().dropped, 0);
        o.close().await.unwrap();
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn offline_mode_model(ops in prop::collection::vec(op(), 1..120)) {
        run(Durability::Offline, ops)?;
    }

    #[test]
    fn always_mode_model(ops in prop::collection::vec(op(), 1..120)) {
        run(Durability::Always, ops)?;
    }
}
