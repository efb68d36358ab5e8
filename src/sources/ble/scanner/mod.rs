//! Our scanner boundary: the source only talks to these traits, so it runs the same
//! against BlueZ (btleplug), a replay file, or a fake in tests.

#[cfg(feature = "ble")]
pub mod bluez;
pub mod fake;
pub mod replay;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::advert::{Advert, Mac};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// No BlueZ / D-Bus / adapter: BLE cannot work on this machine (yet).
    #[error("Bluetooth unavailable: {0}")]
    Unavailable(String),
    #[error("scan failed: {0}")]
    Scan(String),
    #[error("device {0} not found (not advertising, or out of range)")]
    NotFound(Mac),
    #[error("GATT {0}")]
    Gatt(String),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("replay file {path}: {source}")]
    Replay {
        path: String,
        source: std::io::Error,
    },
}

/// Passive advertisement reception.
pub trait Scanner: Send {
    /// Starts discovery. `Unavailable` means: no Bluetooth here.
    fn start(&mut self) -> BoxFuture<'_, Result<(), ScanError>>;
    /// The next advert; `None` when the scanner has ended (replay file done, adapter gone).
    fn next_advert(&mut self) -> BoxFuture<'_, Option<Advert>>;
    /// Stops and starts discovery again (first recovery step of the watchdog).
    fn restart_discovery(&mut self) -> BoxFuture<'_, Result<(), ScanError>>;
    /// Powers the adapter off and on, then starts discovery (second recovery step).
    fn reset_adapter(&mut self) -> BoxFuture<'_, Result<(), ScanError>>;
    /// The GATT side of the same adapter, if it has one.
    fn gatt(&self) -> Option<std::sync::Arc<dyn GattClient>> {
        None
    }
}

/// Connections to devices. Methods take `&self` so each device's GATT task can run on
/// its own without holding up the advert loop.
pub trait GattClient: Send + Sync {
    fn connect(&self, mac: Mac) -> BoxFuture<'_, Result<(), ScanError>>;
    fn disconnect(&self, mac: Mac) -> BoxFuture<'_, Result<(), ScanError>>;
    fn read(
        &self,
        mac: Mac,
        service: u128,
        characteristic: u128,
    ) -> BoxFuture<'_, Result<Vec<u8>, ScanError>>;
    /// Enables notifications; values arrive on the returned channel until disconnect.
    fn subscribe(
        &self,
        mac: Mac,
        service: u128,
        characteristic: u128,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Vec<u8>>, ScanError>>;
}
