//! A direct MQTT connection (rumqttc) as the gateway's uplink and downlink, without the
//! outbox: for tests against mosquitto and for the load tool's gateway process. A QoS 1/2
//! publish is confirmed when the broker acknowledges it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgebus::message::{Message, QoS};
use edgebus::mqttsn::{Delivery, Downlink, Rejected, Uplink};
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing};
use tokio::sync::{mpsc, oneshot};

pub struct Direct {
    client: AsyncClient,
    /// One entry per publish in request order; rumqttc reports `Outgoing::Publish` in
    /// the same order, which is how a packet id is matched to its waiter.
    order: Mutex<VecDeque<Option<oneshot::Sender<()>>>>,
    acks: Mutex<HashMap<u16, oneshot::Sender<()>>>,
}

fn mqtt_qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// Connects to `host:port`; broker messages for the gateway's subscriptions go to the
/// returned receiver.
pub fn connect(host: &str, port: u16, id: &str) -> (Arc<Direct>, mpsc::Receiver<Delivery>) {
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 20_000);
    // As the gateway's own upstream connection: no Nagle delay on small publishes.
    let mut no = rumqttc::NetworkOptions::new();
    no.set_tcp_nodelay(true);
    el.set_network_options(no);
    let d = Arc::new(Direct {
        client,
        order: Mutex::new(VecDeque::new()),
        acks: Mutex::new(HashMap::new()),
    });
    let (tx, rx) = mpsc::channel(4096);
    let me = d.clone();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let w = me.order.lock().unwrap().pop_front().flatten();
                    if let Some(w) = w {
                        me.acks.lock().unwrap().insert(pkid, w);
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(a))) => {
                    if let Some(w) = me.acks.lock().unwrap().remove(&a.pkid) {
                        let _ = w.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::PubComp(a))) => {
                    if let Some(w) = me.acks.lock().unwrap().remove(&a.pkid) {
                        let _ = w.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let qos = match p.qos {
                        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
                        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
                        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
                    };
                    let d = Delivery {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        qos,
                        retain: p.retain,
                    };
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    (d, rx)
}

impl Uplink for Direct {
    fn publish(&self, msg: Message) -> BoxFuture<'static, Result<(), Rejected>> {
        let (tx, rx) = oneshot::channel();
        let qos = msg.qos;
        let r = {
            let mut order = self.order.lock().unwrap();
            let r = self
                .client
                .try_publish(msg.topic, mqtt_qos(qos), msg.retain, msg.payload);
            if r.is_ok() {
                order.push_back((qos != QoS::AtMostOnce).then_some(tx));
            }
            r
        };
        Box::pin(async move {
            match (r, qos) {
                (Err(_), _) => Err(Rejected::Congestion),
                (Ok(()), QoS::AtMostOnce) => Ok(()),
                (Ok(()), _) => rx.await.map_err(|_| Rejected::Closed),
            }
        })
    }
}

impl Downlink for Direct {
    fn subscribe(&self, filter: &str, qos: QoS) {
        let _ = self.client.try_subscribe(filter, mqtt_qos(qos));
    }
    fn unsubscribe(&self, filter: &str) {
        let _ = self.client.try_unsubscribe(filter);
    }
}
