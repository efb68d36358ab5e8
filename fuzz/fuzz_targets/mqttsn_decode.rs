//! Fuzzes the MQTT-SN decoder: any bytes must give a packet or a typed error, never a panic,
//! and whatever decodes must re-encode to bytes that decode to the same thing.
#![no_main]

// The codec has no dependency on the rest of the crate, so it is compiled in directly
// (keeps the fuzz build small: no SQLite, TLS or D-Bus under the sanitizer).
#[path = "../../src/mqttsn/codec/mod.rs"]
#[allow(dead_code, unused_imports)]
mod codec;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = codec::decode(data) {
        let mut out = Vec::new();
        codec::encode(&d, &mut out).expect("a decoded datagram re-encodes");
        let again = codec::decode(&out).expect("re-encoded bytes decode");
        assert_eq!(again, d);
    }
});
