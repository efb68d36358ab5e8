//! How many adverts per second the BLE path decodes: AD parsing, format detection and
//! decoding (incl. AES-CCM for the encrypted vectors) over the test vectors, repeated.
//!
//!     cargo run --release --example ble_decode_rate [ROUNDS]

use std::time::Instant;

use edgebus::sources::ble::advert::{Advert, Mac};
use edgebus::sources::ble::decode;

/// (advertiser, raw AD structures, bind key)
type Case = (Option<Mac>, Vec<u8>, Option<Vec<u8>>);

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ble_vectors.json");
    let doc: serde_json::Value =
        match std::fs::read_to_string(path).map(|t| serde_json::from_str(&t)) {
            Ok(Ok(d)) => d,
            _ => {
                eprintln!("cannot read {path}");
                std::process::exit(1);
            }
        };
    let mut cases: Vec<Case> = Vec::new();
    for v in doc["vectors"].as_array().into_iter().flatten() {
        let mac = v["mac"].as_str().and_then(|m| m.parse().ok());
        let adv = v["adv_data_hex"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default();
        let key = v["bindkey_hex"].as_str().and_then(|k| hex::decode(k).ok());
        cases.push((mac, adv, key));
    }
    let start = Instant::now();
    let mut values = 0usize;
    for _ in 0..rounds {
        for (mac, adv, key) in &cases {
            if let Ok((a, _)) = Advert::parse(*mac, Some(-60), adv)
                && let Ok(Some((_, d))) = decode::decode_auto(&a, key.as_deref())
            {
                values += d.measurements.len();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = rounds * cases.len();
    println!(
        "{n} adverts ({} vectors x {rounds}) in {secs:.3} s: {:.0} adverts/s, {:.2} µs each, {values} values",
        cases.len(),
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
