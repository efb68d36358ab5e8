//! Counter handles for the per-packet metrics. `metrics::counter!` looks its key up in the
//! recorder on every call (label vector, hashing, a shared map); at tens of thousands of
//! datagrams a second that was a measurable share of the gateway's CPU. Handles are taken
//! from the recorder in force when first used (the global one in the gateway, a local one
//! in tests) and kept by the [`Gateway`](super::Gateway).

use metrics::Counter;

use crate::mqttsn::codec::{Packet, Qos};

/// One slot per MQTT-SN message type (0x00 to 0x1D).
type ByType = [Option<Counter>; 32];

fn slot(p: &Packet) -> usize {
    usize::from(p.msg_type() & 0x1F)
}

pub(super) struct Counters {
    datagrams: Option<Counter>,
    received: ByType,
    sent: ByType,
    /// QoS -1, 0, 1, 2.
    uplink: [Option<Counter>; 4],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            datagrams: None,
            received: std::array::from_fn(|_| None),
            sent: std::array::from_fn(|_| None),
            uplink: Default::default(),
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

impl Counters {
    pub fn datagram(&mut self) {
        self.datagrams
            .get_or_insert_with(|| metrics::counter!("edgebus_mqttsn_datagrams_total"))
            .increment(1);
    }

    pub fn received(&mut self, p: &Packet) {
        let name = p.name();
        self.received[slot(p)]
            .get_or_insert_with(
                || metrics::counter!("edgebus_mqttsn_packets_total", "type" => name),
            )
            .increment(1);
    }

    pub fn sent(&mut self, p: &Packet) {
        let name = p.name();
        self.sent[slot(p)]
            .get_or_insert_with(
                || metrics::counter!("edgebus_mqttsn_packets_sent_total", "type" => name),
            )
            .increment(1);
    }

    pub fn uplink(&mut self, qos: Qos) {
        let (i, label) = match qos {
            Qos::MinusOne => (0, "-1"),
            Qos::Zero => (1, "0"),
            Qos::One => (2, "1"),
            Qos::Two => (3, "2"),
        };
        self.uplink[i]
            .get_or_insert_with(|| metrics::counter!("edgebus_mqttsn_uplink_total", "qos" => label))
            .increment(1);
    }
}
