//! Linux BlueZ (over D-Bus) through btleplug. Adapter power-cycling goes through
//! bluez-async, the D-Bus layer btleplug itself uses (btleplug has no power call).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{GattClient, ScanError, Scanner};
use crate::sources::ble::advert::{Advert, Mac};

const DBUS_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Peripherals remembered for name/RSSI; cleared when exceeded (busy places have many).
const MAX_KNOWN: usize = 4096;

async fn dbus<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ScanError> {
    match tokio::time::timeout(DBUS_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ScanError::Scan(format!("{what}: {e}"))),
        Err(_) => Err(ScanError::Timeout(DBUS_TIMEOUT)),
    }
}

pub struct BluezScanner {
    want: Option<String>,
    adapter: Option<Adapter>,
    adapter_name: String,
    rx: Option<mpsc::Receiver<Advert>>,
    pump: Option<JoinHandle<()>>,
}

impl BluezScanner {
    pub fn new(adapter: Option<String>) -> BluezScanner {
        BluezScanner {
            want: adapter,
            adapter: None,
            adapter_name: String::new(),
            rx: None,
            pump: None,
        }
    }

    async fn open(&mut self) -> Result<(), ScanError> {
        let manager = match tokio::time::timeout(DBUS_TIMEOUT, Manager::new()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(ScanError::Unavailable(format!(
                    "cannot reach BlueZ on the D-Bus system bus: {e}"
                )));
            }
            Err(_) => {
                return Err(ScanError::Unavailable(
                    "D-Bus system bus did not answer".into(),
                ));
            }
        };
        let adapters = dbus("list adapters", manager.adapters())
            .await
            .map_err(|e| ScanError::Unavailable(e.to_string()))?;
        let mut chosen = None;
        for a in adapters {
            let info = a.adapter_info().await.unwrap_or_default();
            let name = info.split_whitespace().next().unwrap_or("").to_string();
            if self.want.as_deref().is_none_or(|w| w == name) {
                chosen = Some((a, name));
                break;
            }
        }
        let Some((adapter, name)) = chosen else {
            return Err(ScanError::Unavailable(match &self.want {
                Some(w) => format!("no Bluetooth adapter named {w}"),
                None => "no Bluetooth adapter found".into(),
            }));
        };
        self.adapter = Some(adapter);
        self.adapter_name = name;
        Ok(())
    }

    async fn start_pump(&mut self) -> Result<(), ScanError> {
        let Some(adapter) = self.adapter.clone() else {
            return Err(ScanError::Unavailable("adapter not open".into()));
        };
        if let Some(p) = self.pump.take() {
            p.abort();
        }
        let events = dbus("event stream", adapter.events()).await?;
        dbus("start scan", adapter.start_scan(ScanFilter::default())).await?;
        let (tx, rx) = mpsc::channel(256);
        self.rx = Some(rx);
        self.pump = Some(tokio::spawn(pump(adapter, events, tx)));
        tracing::info!(adapter = %self.adapter_name, "BLE scanning started");
        Ok(())
    }
}

/// Turns btleplug's per-property events into whole adverts.
async fn pump(
    adapter: Adapter,
    mut events: std::pin::Pin<Box<dyn futures::Stream<Item = CentralEvent> + Send>>,
    tx: mpsc::Sender<Advert>,
) {
    let mut known: HashMap<PeripheralId, (Mac, Option<String>, Option<i16>)> = HashMap::new();
    while let Some(ev) = events.next().await {
        let (id, mfg, svc) = match ev {
            CentralEvent::DeviceDiscovered(id) => {
                refresh(&adapter, &id, &mut known).await;
                continue;
            }
            // Updates are frequent (every RSSI change): only look again while the name
            // (from a scan response) is still missing.
            CentralEvent::DeviceUpdated(id) => {
                if known.get(&id).is_none_or(|k| k.1.is_none()) {
                    refresh(&adapter, &id, &mut known).await;
                }
                continue;
            }
            CentralEvent::RssiUpdate { id, rssi } => {
                if let Some(k) = known.get_mut(&id) {
                    k.2 = Some(rssi);
                }
                continue;
            }
            CentralEvent::ManufacturerDataAdvertisement {
                id,
                manufacturer_data,
            } => (id, Some(manufacturer_data), None),
            CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                (id, None, Some(service_data))
            }
            _ => continue,
        };
        if !known.contains_key(&id) {
            refresh(&adapter, &id, &mut known).await;
        }
        let Some((mac, name, rssi)) = known.get(&id).cloned() else {
            continue;
        };
        let mut adv = Advert {
            mac: Some(mac),
            rssi,
            name,
            ..Default::default()
        };
        if let Some(m) = mfg {
            adv.manufacturer_data.extend(m);
        }
        if let Some(s) = svc {
            adv.service_data
                .extend(s.into_iter().map(|(k, v)| (k.as_u128(), v)));
        }
        if tx.send(adv).await.is_err() {
            return;
        }
    }
    tracing::warn!("BlueZ event stream ended");
}

async fn refresh(
    adapter: &Adapter,
    id: &PeripheralId,
    known: &mut HashMap<PeripheralId, (Mac, Option<String>, Option<i16>)>,
) {
    let Ok(Ok(p)) = tokio::time::timeout(DBUS_TIMEOUT, adapter.peripheral(id)).await else {
        return;
    };
    let Ok(Ok(Some(props))) = tokio::time::timeout(DBUS_TIMEOUT, p.properties()).await else {
        return;
    };
    if known.len() >= MAX_KNOWN {
        known.clear();
    }
    known.insert(
        id.clone(),
        (
            Mac(props.address.into_inner()),
            props.local_name,
            props.rssi,
        ),
    );
}

impl Scanner for BluezScanner {
    fn start(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            self.open().await?;
            self.start_pump().await
        }
        .boxed()
    }

    fn next_advert(&mut self) -> BoxFuture<'_, Option<Advert>> {
        async move {
            match self.rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => None,
            }
        }
        .boxed()
    }

    fn restart_discovery(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            if let Some(a) = self.adapter.clone() {
                // Stopping may fail when BlueZ already lost the scan: that is the case we fix.
                let _ = dbus("stop scan", a.stop_scan()).await;
            }
            self.start_pump().await
        }
        .boxed()
    }

    fn reset_adapter(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            let (task, session) = bluez_async::BluetoothSession::new()
                .await
                .map_err(|e| ScanError::Unavailable(format!("D-Bus: {e}")))?;
            let watch = tokio::spawn(task);
            let result = async {
                let adapters = dbus("list adapters", session.get_adapters()).await?;
                let a = adapters
                    .into_iter()
                    .find(|a| a.id.to_string().ends_with(&self.adapter_name))
                    .ok_or_else(|| {
                        ScanError::Unavailable(format!("adapter {} is gone", self.adapter_name))
                    })?;
                dbus("power off", session.set_powered(&a.id, false)).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                dbus("power on", session.set_powered(&a.id, true)).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<(), ScanError>(())
            }
            .await;
            watch.abort();
            result?;
            self.open().await?;
            self.start_pump().await
        }
        .boxed()
    }

    fn gatt(&self) -> Option<Arc<dyn GattClient>> {
        self.adapter
            .clone()
            .map(|a| Arc::new(BluezGatt { adapter: a }) as Arc<dyn GattClient>)
    }
}

impl Drop for BluezScanner {
    fn drop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
        }
    }
}

/// GATT over the same adapter. Devices must have been seen by the scan first.
pub struct BluezGatt {
    adapter: Adapter,
}

impl BluezGatt {
    async fn peripheral(&self, mac: Mac) -> Result<Peripheral, ScanError> {
        let ps = dbus("peripherals", self.adapter.peripherals()).await?;
        ps.into_iter()
            .find(|p| p.address().into_inner() == mac.0)
            .ok_or(ScanError::NotFound(mac))
    }

    async fn characteristic(
        &self,
        mac: Mac,
        service: u128,
        ch: u128,
    ) -> Result<(Peripheral, btleplug::api::Characteristic), ScanError> {
        let p = self.peripheral(mac).await?;
        let c = p
            .characteristics()
            .into_iter()
            .find(|c| c.uuid.as_u128() == ch && c.service_uuid.as_u128() == service)
            .ok_or_else(|| {
                ScanError::Gatt(format!("characteristic {ch:032x} not found on {mac}"))
            })?;
        Ok((p, c))
    }
}

impl GattClient for BluezGatt {
    fn connect(&self, mac: Mac) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            let p = self.peripheral(mac).await?;
            if !p.is_connected().await.unwrap_or(false) {
                match tokio::time::timeout(CONNECT_TIMEOUT, p.connect()).await {
                    Ok(r) => r.map_err(|e| ScanError::Gatt(format!("connect: {e}")))?,
                    Err(_) => return Err(ScanError::Timeout(CONNECT_TIMEOUT)),
                }
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, p.discover_services()).await {
                Ok(r) => r.map_err(|e| ScanError::Gatt(format!("discover services: {e}"))),
                Err(_) => Err(ScanError::Timeout(CONNECT_TIMEOUT)),
            }
        }
        .boxed()
    }

    fn disconnect(&self, mac: Mac) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            let p = self.peripheral(mac).await?;
            dbus("disconnect", p.disconnect()).await
        }
        .boxed()
    }

    fn read(&self, mac: Mac, service: u128, ch: u128) -> BoxFuture<'_, Result<Vec<u8>, ScanError>> {
        async move {
            let (p, c) = self.characteristic(mac, service, ch).await?;
            dbus("read", p.read(&c)).await
        }
        .boxed()
    }

    fn subscribe(
        &self,
        mac: Mac,
        service: u128,
        ch: u128,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Vec<u8>>, ScanError>> {
        async move {
            let (p, c) = self.characteristic(mac, service, ch).await?;
            let mut stream = dbus("notifications", p.notifications()).await?;
            dbus("subscribe", p.subscribe(&c)).await?;
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Some(n) = stream.next().await {
                    if n.uuid.as_u128() == ch && tx.send(n.value).await.is_err() {
                        break;
                    }
                }
            });
            Ok(rx)
        }
        .boxed()
    }
}
