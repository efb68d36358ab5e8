//! MQTT-SN 1.2 gateway: many sensor nodes (UDP, serial lines, radio forwarders) share the one
//! upstream connection and the outbox.
//!
//! Layout: [`codec`] (bytes <-> packets), [`session`] (per-client state), [`gateway`] (the
//! sans-IO protocol engine over all sessions), [`topics`] (names, filters, id registry),
//! [`runtime`] (tokio shell: UDP sockets, serial lines, timers), [`serial`] (serial framing).
//!
//! # Boundary with the core
//!
//! The gateway does not speak MQTT. The pipeline gives it:
//! - an [`Uplink`]: the outbox. `publish` is called, and its future polled once, in arrival
//!   order: the message must be enqueued by then (that order is the outbox order). The future
//!   resolves once the outbox holds the message (committed, under `durability: always`).
//!   Only then does a QoS 1/2 client get PUBACK/PUBREC; `Err(Rejected::Congestion)` becomes
//!   PUBACK "congestion". [`wiring`] implements it for [`crate::outbox::Outbox`].
//! - a [`Downlink`]: upstream (un)subscriptions. The gateway reference-counts filters across
//!   its clients: `subscribe` comes for the first interested client (again with a higher
//!   QoS if one asks for more), `unsubscribe` when the last one is gone. The upstream keeps
//!   them across reconnects.
//!   [`wiring`] implements it for [`crate::upstream::UpstreamHandle`].
//! - a channel of [`Delivery`] (the upstream's `Incoming`): broker messages matching those
//!   filters (full upstream topic). The gateway routes each to every matching client at the
//!   granted QoS.
//!
//! [`wiring::run_with_core`] does all of that for the pipeline.
//!
//! Topics crossing the boundary are upstream topics: `mqttsn.topic_prefix` is added on the
//! way up and stripped on the way down here, not in the core.

pub mod codec;
pub mod config;
pub mod gateway;
pub mod runtime;
pub mod serial;
pub mod session;
pub mod topics;
mod udp_batch;
pub mod wiring;

use futures::future::BoxFuture;

pub use config::MqttSnConfig;
pub use gateway::{Action, Gateway, Rejected};
pub use runtime::{MqttSnError, run};
pub use session::{Addr, Peer};

use crate::message::Message;

/// The outbox, as the gateway sees it.
pub trait Uplink: Send + Sync + 'static {
    /// Enqueues `msg` no later than the future's first poll; the future says whether the
    /// outbox holds it.
    fn publish(&self, msg: Message) -> BoxFuture<'static, Result<(), Rejected>>;
}

/// Upstream subscriptions, as the gateway sees them. Must not block.
pub trait Downlink: Send + Sync + 'static {
    fn subscribe(&self, filter: &str, qos: crate::message::QoS);
    fn unsubscribe(&self, filter: &str);
}

/// A broker message for the gateway's clients (full upstream topic).
pub use crate::upstream::Incoming as Delivery;
