//! Decoders see arbitrary radio bytes: none of them may panic, whatever arrives.

use edgebus::sources::ble::advert::{Advert, Mac, uuid16};
use edgebus::sources::ble::decode::{
    self, DecodeCtx, Format, atc, beacon, bthome, mibeacon, ruuvi,
};
use proptest::prelude::*;

fn with_header(header: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(move |mut v| {
        let mut out = header.to_vec();
        out.append(&mut v);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn payload_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80), key16 in any::<[u8; 16]>(), key12 in any::<[u8; 12]>()) {
        let mac = Some(Mac([1, 2, 3, 4, 5, 6]));
        for key in [None, Some(&key16[..]), Some(&key12[..])] {
            let ctx = DecodeCtx { mac, bind_key: key };
            let _ = bthome::decode(&data, &ctx);
            let _ = mibeacon::decode(&data, &ctx);
        }
        let _ = bthome::decode(&data, &DecodeCtx::default());
        let _ = mibeacon::decode(&data, &DecodeCtx::default());
        let _ = ruuvi::decode_v5(&data);
        let _ = atc::decode_atc1441(&data);
        let _ = atc::decode_pvvx(&data);
        let _ = beacon::decode_ibeacon(&data);
        let _ = beacon::decode_eddystone(&data);
    }

    /// Valid-looking headers reach the deeper parsing paths.
    #[test]
    fn structured_payloads_never_panic(
        bt in with_header(&[0x40]), bte in with_header(&[0x43, 1, 2, 3, 4, 5, 6]),
        mi in with_header(&[0x58, 0x58, 0x5b, 0x05, 0x01]), mi3 in with_header(&[0x58, 0x30, 0xb6, 0x03, 0x01]),
        ru in with_header(&[0x05]), ed in with_header(&[0x20, 0x00]), key in any::<[u8; 16]>(),
    ) {
        let ctx = DecodeCtx { mac: Some(Mac([9; 6])), bind_key: Some(&key) };
        let _ = bthome::decode(&bt, &ctx);
        let _ = bthome::decode(&bte, &ctx);
        let _ = mibeacon::decode(&mi, &ctx);
        let _ = mibeacon::decode(&mi3, &DecodeCtx { mac: Some(Mac([9; 6])), bind_key: Some(&key[..12]) });
        let _ = ruuvi::decode_v5(&ru);
        let _ = beacon::decode_eddystone(&ed);
    }

    /// Raw AD structures through the parser, auto-detection and every decoder.
    #[test]
    fn advert_pipeline_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), sd in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok((adv, _)) = Advert::parse(Some(Mac([1; 6])), Some(-50), &data) {
            let _ = decode::decode_auto(&adv, None);
        }
        let mut adv = Advert::default();
        for u in [0xfcd2u16, 0x181a, 0xfe95, 0xfeaa] {
            adv.service_data.insert(uuid16(u), sd.clone());
        }
        adv.manufacturer_data.insert(0x0499, sd.clone());
        adv.manufacturer_data.insert(0x004c, sd.clone());
        for f in Format::ALL {
            let _ = decode::decode_with(f, &adv, Some(&[0u8; 16]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Replay lines come from users' files: any text is an error or an advert, never a panic.
    #[test]
    fn replay_lines_never_panic(line in ".{0,200}", hexs in "[0-9a-f]{0,120}") {
        let _ = edgebus::sources::ble::scanner::replay::parse_line(&line);
        let _ = edgebus::sources::ble::scanner::replay::parse_line(&format!("A4:C1:38:8D:18:B2 -60 {hexs}"));
    }

    /// The whole advert path of the source (matching, keys, dedup, privacy) on random adverts.
    #[test]
    fn engine_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120), last in any::<u8>(), key in any::<[u8; 16]>()) {
        use edgebus::sources::ble::config::{DecoderChoice, WatchdogConfig};
        use edgebus::sources::ble::engine::{DeviceSpec, Engine, UnknownSpec};
        use edgebus::sources::ble::watchdog::Watchdog;
        use std::sync::Arc;
        use std::time::Duration;
        let t0 = tokio::time::Instant::now();
        let mac = Mac([0xA4, 0xC1, 0x38, 0, 0, last]);
        let dev = DeviceSpec {
            name: Arc::from("d"), mac: Some(mac), local_name: None, decoder: DecoderChoice::Auto,
            key: Some(key.to_vec()), min_interval: Duration::ZERO, offline_after: Duration::from_secs(1),
            rssi: true, points: None,
        };
        let unknown = UnknownSpec { hash_key: b"0123456789abcdef".to_vec(), prefix: "ble-".into(), formats: Format::ALL.to_vec(), min_interval: Duration::ZERO, max_devices: 4 };
        let mut e = Engine::new(Arc::from("b"), vec![dev], Some(unknown), None, Watchdog::new(WatchdogConfig::default(), t0), t0);
        if let Ok((adv, _)) = Advert::parse(Some(mac), Some(-40), &data) {
            let _ = e.on_advert(&adv, t0, std::time::SystemTime::now());
            let other = Advert { mac: Some(Mac([1, 2, 3, 4, 5, last])), ..adv };
            let _ = e.on_advert(&other, t0, std::time::SystemTime::now());
        }
        let _ = e.on_tick(t0 + Duration::from_secs(2));
    }
}
