//! The gateway on the core's outbox and upstream connection.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Downlink, MqttSnConfig, MqttSnError, Rejected, Uplink};
use crate::message::{Message, QoS};
use crate::outbox::{Outbox, OutboxError};
use crate::upstream::UpstreamHandle;

impl Uplink for Outbox {
    /// QoS 0 goes in like a reading (when full, the oldest are evicted); QoS 1/2 waits until
    /// the outbox holds it (committed under `durability: always`) and is refused with
    /// "congestion" rather than evicting when the outbox is full.
    fn publish(&self, msg: Message) -> BoxFuture<'static, Result<(), Rejected>> {
        let ob = self.clone();
        Box::pin(async move {
            let r = if msg.qos == QoS::AtMostOnce {
                ob.push(msg).await
            } else {
                ob.push_confirmed(msg).await
            };
            r.map(|_| ()).map_err(|e| match e {
                OutboxError::Closed => Rejected::Closed,
                // Full, or the disk refused the commit: the client may retry later.
                _ => Rejected::Congestion,
            })
        })
    }
}

impl Downlink for UpstreamHandle {
    fn subscribe(&self, filter: &str, qos: QoS) {
        UpstreamHandle::subscribe(self, filter.to_string(), qos);
    }
    fn unsubscribe(&self, filter: &str) {
        UpstreamHandle::unsubscribe(self, filter.to_string());
    }
}

/// Binds the `mqttsn:` sockets (and serial port) and serves until `shutdown`: publishes go
/// into `outbox`, subscriptions and broker messages through `upstream`.
pub async fn run_with_core(
    cfg: MqttSnConfig,
    outbox: Outbox,
    upstream: UpstreamHandle,
    shutdown: CancellationToken,
) -> Result<(), MqttSnError> {
    let deliveries = upstream.incoming();
    super::run(
        cfg,
        Arc::new(outbox),
        Arc::new(upstream),
        deliveries,
        shutdown,
    )
    .await
}
