//! A scriptable scanner and GATT client for tests: adverts are pushed through a channel,
//! recovery calls and GATT traffic are counted and scripted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{GattClient, ScanError, Scanner};
use crate::sources::ble::advert::{Advert, Mac};

#[derive(Debug, Default)]
pub struct FakeStats {
    pub starts: AtomicU32,
    pub restarts: AtomicU32,
    pub resets: AtomicU32,
}

pub struct FakeScanner {
    rx: mpsc::Receiver<Advert>,
    stats: Arc<FakeStats>,
    unavailable: bool,
    gatt: Option<Arc<FakeGatt>>,
}

/// The test's end: push adverts, read counters.
#[derive(Clone)]
pub struct FakeHandle {
    pub tx: mpsc::Sender<Advert>,
    pub stats: Arc<FakeStats>,
}

impl FakeScanner {
    pub fn new() -> (FakeScanner, FakeHandle) {
        let (tx, rx) = mpsc::channel(64);
        let stats = Arc::new(FakeStats::default());
        (
            FakeScanner {
                rx,
                stats: stats.clone(),
                unavailable: false,
                gatt: None,
            },
            FakeHandle { tx, stats },
        )
    }

    /// A scanner whose `start` fails like a machine without BlueZ.
    pub fn unavailable() -> FakeScanner {
        let (s, _) = FakeScanner::new();
        FakeScanner {
            unavailable: true,
            ..s
        }
    }

    pub fn with_gatt(mut self, g: Arc<FakeGatt>) -> FakeScanner {
        self.gatt = Some(g);
        self
    }
}

impl Scanner for FakeScanner {
    fn start(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        self.stats.starts.fetch_add(1, Ordering::SeqCst);
        let r = if self.unavailable {
            Err(ScanError::Unavailable("no D-Bus system bus (fake)".into()))
        } else {
            Ok(())
        };
        async move { r }.boxed()
    }
    fn next_advert(&mut self) -> BoxFuture<'_, Option<Advert>> {
        self.rx.recv().boxed()
    }
    fn restart_discovery(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        self.stats.restarts.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }
    fn reset_adapter(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        self.stats.resets.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }
    fn gatt(&self) -> Option<Arc<dyn GattClient>> {
        self.gatt.clone().map(|g| g as Arc<dyn GattClient>)
    }
}

/// Scripted GATT peer: values per characteristic, a number of failing connects first.
#[derive(Default)]
pub struct FakeGatt {
    pub values: Mutex<HashMap<(Mac, u128), Vec<u8>>>,
    pub fail_connects: AtomicU32,
    pub connects: AtomicU32,
    pub connect_attempts: AtomicU32,
    pub reads: AtomicU32,
    notify: Mutex<Subscriptions>,
}

type Subscriptions = HashMap<(Mac, u128), mpsc::Sender<Vec<u8>>>;

impl FakeGatt {
    pub fn set(&self, mac: Mac, ch: u128, v: Vec<u8>) {
        if let Ok(mut m) = self.values.lock() {
            m.insert((mac, ch), v);
        }
    }
    /// Sends a notification if the characteristic is subscribed; false otherwise.
    pub fn notify(&self, mac: Mac, ch: u128, v: Vec<u8>) -> bool {
        let tx = self
            .notify
            .lock()
            .ok()
            .and_then(|m| m.get(&(mac, ch)).cloned());
        tx.is_some_and(|t| t.try_send(v).is_ok())
    }
    /// Drops all subscriptions, as a lost connection does.
    pub fn drop_link(&self) {
        if let Ok(mut m) = self.notify.lock() {
            m.clear();
        }
    }
}

impl GattClient for FakeGatt {
    fn connect(&self, mac: Mac) -> BoxFuture<'_, Result<(), ScanError>> {
        self.connect_attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail_connects
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            self.connects.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if fail {
                Err(ScanError::NotFound(mac))
            } else {
                Ok(())
            }
        }
        .boxed()
    }
    fn disconnect(&self, _mac: Mac) -> BoxFuture<'_, Result<(), ScanError>> {
        async { Ok(()) }.boxed()
    }
    fn read(
        &self,
        mac: Mac,
        _service: u128,
        ch: u128,
    ) -> BoxFuture<'_, Result<Vec<u8>, ScanError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let v = self
            .values
            .lock()
            .ok()
            .and_then(|m| m.get(&(mac, ch)).cloned());
        async move { v.ok_or_else(|| ScanError::Gatt("no such characteristic".into())) }.boxed()
    }
    fn subscribe(
        &self,
        mac: Mac,
        _service: u128,
        ch: u128,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Vec<u8>>, ScanError>> {
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut m) = self.notify.lock() {
            m.insert((mac, ch), tx);
        }
        async move { Ok(rx) }.boxed()
    }
}
