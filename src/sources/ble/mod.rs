//! Bluetooth LE adapter: passive advert decoding, GATT, scan watchdog.

pub mod advert;
pub mod decode;
