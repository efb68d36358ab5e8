//! Which outbox message each packet id stands for (sans-IO).
//!
//! rumqttc's `publish()` returns when the request is queued; the packet id is only known when
//! the event loop reports `Outgoing::Publish(pkid)`, in request order. So every publish request
//! is queued here, matched to the next `Outgoing::Publish` event, and released by its PUBACK
//! (QoS 1), PUBCOMP (QoS 2), or at once when written (QoS 0).

use std::collections::{HashMap, VecDeque};

use crate::message::QoS;

/// What a publish request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// An outbox message.
    Msg(u64),
    /// The gateway's own status message (`online` / `offline`).
    Status,
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// Requested, not yet written (request order).
    queued: VecDeque<(Tag, QoS)>,
    /// Written, awaiting acknowledgement.
    inflight: HashMap<u16, (Tag, QoS)>,
}

impl Tracker {
    /// A publish request was handed to the client.
    pub fn requested(&mut self, tag: Tag, qos: QoS) {
        self.queued.push_back((tag, qos));
    }

    /// `Outgoing::Publish(pkid)`: the oldest request was written. Returns the tag when it is
    /// complete already (QoS 0).
    pub fn written(&mut self, pkid: u16) -> Option<Tag> {
        let (tag, qos) = self.queued.pop_front()?;
        if qos == QoS::AtMostOnce {
            return Some(tag);
        }
        if let Some(old) = self.inflight.insert(pkid, (tag, qos)) {
            // The client never reuses an unacknowledged id; if it did, the old message stays
            // in the outbox and is sent again after the next reconnect.
            tracing::warn!(
                pkid,
                ?old,
                "packet id reused while awaiting its acknowledgement"
            );
        }
        None
    }

    /// PUBACK / PUBCOMP for `pkid`.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        self.inflight.remove(&pkid).map(|(t, _)| t)
    }

    /// QoS 2 publishes not yet complete (brokers cap these per client: mosquitto
    /// disconnects a 3.1.1 client that exceeds its `max_inflight_messages`, 20 by default).
    pub fn outstanding_qos2(&self) -> usize {
        self.queued
            .iter()
            .filter(|(_, q)| *q == QoS::ExactlyOnce)
            .count()
            + self
                .inflight
                .values()
                .filter(|(_, q)| *q == QoS::ExactlyOnce)
                .count()
    }

    /// Written publishes waiting for the broker's acknowledgement (QoS 1/2).
    pub fn awaiting_broker(&self) -> usize {
        self.inflight.len()
    }

    /// Requests not yet acknowledged (queued + written).
    pub fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// Whether the status message is still unacknowledged.
    pub fn status_pending(&self) -> bool {
        self.queued.iter().any(|(t, _)| *t == Tag::Status)
            || self.inflight.values().any(|(t, _)| *t == Tag::Status)
    }
}

/// Reconnect delay: doubles from `min` to `max`; each delay is drawn from [d/2, d] so a fleet
/// of gateways does not reconnect in lockstep after a broker restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: std::time::Duration,
    max: std::time::Duration,
    current: std::time::Duration,
}

impl Backoff {
    pub fn new(min: std::time::Duration, max: std::time::Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay; `unit` in [0, 1) is the jitter draw.
    pub fn next(&mut self, unit: f64) -> std::time::Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn qos1_completes_on_ack_in_any_order() {
        let mut t = Tracker::default();
        t.requested(Tag::Status, QoS::AtLeastOnce);
        t.requested(Tag::Msg(10), QoS::AtLeastOnce);
        t.requested(Tag::Msg(11), QoS::AtLeastOnce);
        assert_eq!(t.outstanding(), 3);
        assert_eq!(t.written(1), None);
        assert_eq!(t.written(2), None);
        assert_eq!(t.written(3), None);
        assert!(t.status_pending());
        assert_eq!(t.acked(3), Some(Tag::Msg(11)));
        assert_eq!(t.acked(1), Some(Tag::Status));
        assert!(!t.status_pending());
        assert_eq!(t.acked(1), None, "duplicate ack");
        assert_eq!(t.acked(2), Some(Tag::Msg(10)));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn qos0_completes_when_written() {
        let mut t = Tracker::default();
        t.requested(Tag::Msg(1), QoS::AtMostOnce);
        t.requested(Tag::Msg(2), QoS::ExactlyOnce);
        assert_eq!(t.written(0), Some(Tag::Msg(1)));
        assert_eq!(t.written(7), None);
        assert_eq!(t.acked(7), Some(Tag::Msg(2)));
        assert_eq!(t.written(8), None, "nothing queued");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(b.next(1.0), Duration::from_secs(1));
        assert_eq!(b.next(0.0), Duration::from_secs(1)); // 2s drawn at the low end
        assert_eq!(b.next(1.0), Duration::from_secs(4));
        assert_eq!(b.next(1.0), Duration::from_secs(8));
        assert_eq!(b.next(1.0), Duration::from_secs(8));
        b.reset();
        assert_eq!(b.next(0.5), Duration::from_millis(750));
    }
}
