//! One broker connection, MQTT 3.1.1 or 5, behind one small interface.
//!
//! Every connection gets a fresh rumqttc client and event loop: nothing queued for an old
//! connection can leak into a new one, and the outbox stays the only truth. The event loop is
//! polled in its own task (publishing from the polling task would deadlock) and its events are
//! mapped to [`Ev`].

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Incoming;
use super::config::{BrokerUrl, Protocol, Scheme};
use crate::message::QoS;

/// Largest packet sent or accepted (bigger outbox messages are refused, not retried forever).
pub const MAX_PACKET: usize = 1024 * 1024;

/// What the event loop reports, version-independent.
#[derive(Debug)]
pub enum Ev {
    ConnAck,
    /// `Outgoing::Publish(pkid)`: the oldest publish request was written to the socket.
    Written(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success code.
    Acked(u16),
    /// MQTT 5 PUBACK/PUBREC with an error code. `permanent`: retrying cannot succeed.
    Refused {
        pkid: u16,
        reason: String,
        permanent: bool,
    },
    Message(Incoming),
    /// The connection ended (the error as text).
    Closed(String),
}

/// Everything needed to open a connection.
#[derive(Clone)]
pub struct Spec {
    pub url: BrokerUrl,
    pub protocol: Protocol,
    pub transport: rumqttc::Transport,
    pub client_id: String,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub credentials: Option<(String, String)>,
    pub will_topic: String,
    pub inflight: u16,
}

pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

fn v4_qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q;
    match q {
        QoS::AtMostOnce => Q::AtMostOnce,
        QoS::AtLeastOnce => Q::AtLeastOnce,
        QoS::ExactlyOnce => Q::ExactlyOnce,
    }
}

impl Client {
    /// Queues a publish; never waits (the request channel is sized above the in-flight window).
    pub fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Bytes,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, v4_qos(qos), retain, payload.to_vec())
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, v5_qos(qos), retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, v4_qos(qos))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, v5_qos(qos))
                .map_err(|e| e.to_string()),
        }
    }

    pub fn unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
        }
    }

    pub fn disconnect(&self) {
        match self {
            Client::V4(c) => {
                let _ = c.try_disconnect();
            }
            Client::V5(c) => {
                let _ = c.try_disconnect();
            }
        }
    }
}

/// A live (or connecting) connection. Dropping it stops the polling task.
pub struct Conn {
    pub client: Client,
    pub events: mpsc::Receiver<Ev>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Waits (bounded) for the polling task to finish after a disconnect.
    pub async fn finish(mut self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            while self.events.recv().await.is_some() {}
        })
        .await;
    }
}

fn network_options(spec: &Spec) -> rumqttc::NetworkOptions {
    let mut no = rumqttc::NetworkOptions::new();
    no.set_tcp_nodelay(true);
    no.set_connection_timeout(spec.connect_timeout.as_secs().max(1));
    no
}

fn broker_addr(spec: &Spec) -> String {
    match spec.url.scheme {
        Scheme::Ws | Scheme::Wss => spec.url.ws_url(),
        Scheme::Mqtt | Scheme::Mqtts => spec.url.host.clone(),
    }
}

/// How long a PINGREQ may stay unanswered (no packet at all from the broker) before the
/// connection is declared dead.
///
/// rumqttc sends a PINGREQ every keep-alive interval whatever the traffic, but notices a
/// missing PINGRESP only when the next PINGREQ is due: up to two keep-alives after the link
/// died. A live broker answers at once, so waiting 0.4 keep-alive after the PINGREQ is
/// plenty; a half-open connection (peer gone without a FIN or RST, a NAT entry dropped, a
/// proxy that stopped forwarding) is then detected within 1.4 keep-alives, whenever in the
/// ping cycle it dies. Only time spent waiting on the network counts: the deadline starts
/// when the PINGREQ went out, and any packet from the broker clears it.
pub fn ping_deadline(keep_alive: Duration) -> Option<Duration> {
    (!keep_alive.is_zero()).then(|| keep_alive * 2 / 5)
}

fn unanswered(limit: Option<Duration>) -> String {
    let ms = limit.map_or(0, |l| l.as_millis());
    format!("no packet from the broker within {ms} ms of a PINGREQ: connection presumed dead")
}

/// Polls the event loop, but gives up (`None`) when a PINGREQ sent at `ping` is still
/// unanswered after `limit`.
async fn poll_within<T>(
    poll: impl std::future::Future<Output = T>,
    ping: Option<Instant>,
    limit: Option<Duration>,
) -> Option<T> {
    match (ping, limit) {
        (Some(p), Some(l)) => tokio::time::timeout_at(p + l, poll).await.ok(),
        _ => Some(poll.await),
    }
}

/// Starts connecting. The first event is `ConnAck` or `Closed`.
pub fn open(spec: &Spec) -> Conn {
    // Room for the whole window plus status and subscription requests.
    let cap = spec.inflight as usize * 2 + 256;
    let (tx, events) = mpsc::channel(1024);
    match spec.protocol {
        Protocol::V311 => {
            let mut o =
                rumqttc::MqttOptions::new(&spec.client_id, broker_addr(spec), spec.url.port);
            o.set_transport(spec.transport.clone());
            o.set_keep_alive(spec.keep_alive);
            o.set_clean_session(true);
            if let Some((u, p)) = &spec.credentials {
                o.set_credentials(u, p);
            }
            o.set_last_will(rumqttc::LastWill::new(
                &spec.will_topic,
                "offline",
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
            o.set_inflight(spec.inflight.max(1));
            o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
            let (client, mut el) = rumqttc::AsyncClient::new(o, cap);
            el.set_network_options(network_options(spec));
            let limit = ping_deadline(spec.keep_alive);
            let task = tokio::spawn(async move {
                let mut ping: Option<Instant> = None;
                loop {
                    let Some(polled) = poll_within(el.poll(), ping, limit).await else {
                        let _ = tx.send(Ev::Closed(unanswered(limit))).await;
                        break;
                    };
                    match &polled {
                        Ok(rumqttc::Event::Incoming(_)) => ping = None,
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::PingReq)) => {
                            ping = ping.or(Some(Instant::now()))
                        }
                        _ => {}
                    }
                    let (ev, end) = match polled {
                        Ok(e) => map_v4(e),
                        Err(e) => (Some(Ev::Closed(e.to_string())), true),
                    };
                    if let Some(ev) = ev
                        && tx.send(ev).await.is_err()
                    {
                        break;
                    }
                    if end {
                        break;
                    }
                }
            });
            Conn {
                client: Client::V4(client),
                events,
                task,
            }
        }
        Protocol::V5 => {
            use rumqttc::v5::mqttbytes::v5::LastWill;
            let mut o =
                rumqttc::v5::MqttOptions::new(&spec.client_id, broker_addr(spec), spec.url.port);
            o.set_transport(spec.transport.clone());
            o.set_keep_alive(spec.keep_alive);
            o.set_clean_start(true);
            if let Some((u, p)) = &spec.credentials {
                o.set_credentials(u, p);
            }
            o.set_last_will(LastWill::new(
                &spec.will_topic,
                "offline",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
            o.set_outgoing_inflight_upper_limit(spec.inflight.max(1));
            o.set_max_packet_size(Some(MAX_PACKET as u32));
            o.set_connection_timeout(spec.connect_timeout.as_secs().max(1));
            o.set_network_options(network_options(spec));
            let (client, mut el) = rumqttc::v5::AsyncClient::new(o, cap);
            let limit = ping_deadline(spec.keep_alive);
            let task = tokio::spawn(async move {
                let mut ping: Option<Instant> = None;
                loop {
                    let Some(polled) = poll_within(el.poll(), ping, limit).await else {
                        let _ = tx.send(Ev::Closed(unanswered(limit))).await;
                        break;
                    };
                    match &polled {
                        Ok(rumqttc::v5::Event::Incoming(_)) => ping = None,
                        Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::PingReq)) => {
                            ping = ping.or(Some(Instant::now()))
                        }
                        _ => {}
                    }
                    let (ev, end) = match polled {
                        Ok(e) => map_v5(e),
                        Err(e) => (Some(Ev::Closed(e.to_string())), true),
                    };
                    if let Some(ev) = ev
                        && tx.send(ev).await.is_err()
                    {
                        break;
                    }
                    if end {
                        break;
                    }
                }
            });
            Conn {
                client: Client::V5(client),
                events,
                task,
            }
        }
    }
}

fn qos_from(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

/// (event to report, whether the loop ends).
fn map_v4(e: rumqttc::Event) -> (Option<Ev>, bool) {
    use rumqttc::{Event, Outgoing, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(_)) => (Some(Ev::ConnAck), false),
        Event::Incoming(Packet::PubAck(a)) => (Some(Ev::Acked(a.pkid)), false),
        Event::Incoming(Packet::PubComp(a)) => (Some(Ev::Acked(a.pkid)), false),
        Event::Incoming(Packet::Publish(p)) => (
            Some(Ev::Message(Incoming {
                topic: p.topic,
                payload: p.payload,
                qos: qos_from(p.qos as u8),
                retain: p.retain,
            })),
            false,
        ),
        Event::Incoming(Packet::Disconnect) => {
            (Some(Ev::Closed("broker disconnected".into())), true)
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => (Some(Ev::Written(pkid)), false),
        Event::Outgoing(Outgoing::Disconnect) => (Some(Ev::Closed("disconnected".into())), true),
        _ => (None, false),
    }
}

fn map_v5(e: rumqttc::v5::Event) -> (Option<Ev>, bool) {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubRecReason};
    match e {
        Event::Incoming(Packet::ConnAck(_)) => (Some(Ev::ConnAck), false),
        Event::Incoming(Packet::PubAck(a)) => match a.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                (Some(Ev::Acked(a.pkid)), false)
            }
            r => (
                Some(Ev::Refused {
                    pkid: a.pkid,
                    permanent: matches!(
                        r,
                        PubAckReason::NotAuthorized
                            | PubAckReason::TopicNameInvalid
                            | PubAckReason::PayloadFormatInvalid
                    ),
                    reason: format!("{r:?}"),
                }),
                false,
            ),
        },
        Event::Incoming(Packet::PubRec(a)) => match a.reason {
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers => (None, false),
            r => (
                Some(Ev::Refused {
                    pkid: a.pkid,
                    permanent: matches!(
                        r,
                        PubRecReason::NotAuthorized
                            | PubRecReason::TopicNameInvalid
                            | PubRecReason::PayloadFormatInvalid
                    ),
                    reason: format!("{r:?}"),
                }),
                false,
            ),
        },
        Event::Incoming(Packet::PubComp(a)) => (Some(Ev::Acked(a.pkid)), false),
        Event::Incoming(Packet::Publish(p)) => match String::from_utf8(p.topic.to_vec()) {
            Ok(topic) => (
                Some(Ev::Message(Incoming {
                    topic,
                    payload: p.payload,
                    qos: qos_from(p.qos as u8),
                    retain: p.retain,
                })),
                false,
            ),
            Err(_) => (None, false),
        },
        Event::Incoming(Packet::Disconnect(d)) => (
            Some(Ev::Closed(format!(
                "broker disconnected: {:?}",
                d.reason_code
            ))),
            true,
        ),
        Event::Outgoing(Outgoing::Publish(pkid)) => (Some(Ev::Written(pkid)), false),
        Event::Outgoing(Outgoing::Disconnect) => (Some(Ev::Closed("disconnected".into())), true),
        _ => (None, false),
    }
}
