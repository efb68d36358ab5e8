//! Every BLE decoder vector (tests/data/ble_vectors.json, taken from public decoder
//! test suites; see tests/data/ble_vectors.README.md) must decode to its expected
//! values within the precision its literal states (25.06 -> ±0.005, 46 -> ±0.5);
//! negative vectors must produce no measurement at all.

use edgebus::reading::Value;
use edgebus::sources::ble::advert::{Advert, Mac};
use edgebus::sources::ble::decode::{self, Format};
use serde_json::Value as J;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ble_vectors.json");

/// Expected key -> (our point name, factor from our value to the expected unit).
fn point_for(key: &str) -> (&'static str, f64) {
    match key {
        "temperature_c" => ("temperature", 1.0),
        "humidity_pct" => ("humidity", 1.0),
        "voltage_v" => ("voltage", 1.0),
        "battery_pct" => ("battery", 1.0),
        "pressure_hpa" => ("pressure", 1.0),
        "movement_counter" => ("movement_counter", 1.0),
        "packet_id" => ("packet_id", 1.0),
        "acceleration_x_mg" => ("acceleration_x", 1.0),
        "acceleration_y_mg" => ("acceleration_y", 1.0),
        "acceleration_z_mg" => ("acceleration_z", 1.0),
        "measurement_sequence" => ("measurement_sequence", 1.0),
        "tx_power_dbm" | "tx_power_dbm_at_0m" => ("tx_power", 1.0),
        "mac_in_payload" => ("mac", 1.0),
        "ibeacon_uuid" => ("uuid", 1.0),
        "major" => ("major", 1.0),
        "minor" => ("minor", 1.0),
        "measured_power_dbm" => ("measured_power", 1.0),
        "moisture_pct" => ("moisture", 1.0),
        "battery_mv" => ("voltage", 1000.0),
        "adv_count" => ("adv_count", 1.0),
        "uptime_0p1s" => ("uptime", 10.0),
        "uptime_s" => ("uptime", 1.0),
        "illuminance_lux" => ("illuminance", 1.0),
        "dew_point_c" => ("dew_point", 1.0),
        "pm25_ugm3" => ("pm2_5", 1.0),
        "pm10_ugm3" => ("pm10", 1.0),
        "co2_ppm" => ("co2", 1.0),
        "conductivity_uscm" => ("conductivity", 1.0),
        "namespace" => ("namespace", 1.0),
        "instance" => ("instance", 1.0),
        "url" => ("url", 1.0),
        "encrypted" => ("encrypted", 1.0),
        "encrypted_data_hex" => ("encrypted_data", 1.0),
        "salt" => ("salt", 1.0),
        "mic" => ("mic", 1.0),
        "eid_hex" => ("eid", 1.0),
        other => panic!("vector key {other} has no mapping in this test"),
    }
}

fn format_for(f: &str) -> Format {
    match f {
        "bthome_v2" | "bthome_v2_encrypted" => Format::Bthome,
        "xiaomi_mibeacon" | "xiaomi_mibeacon_encrypted" => Format::Mibeacon,
        "xiaomi_atc1441" => Format::Atc1441,
        "xiaomi_pvvx" => Format::Pvvx,
        "ruuvi_rawv2" => Format::RuuviV5,
        "ibeacon" => Format::Ibeacon,
        f if f.starts_with("eddystone") => Format::Eddystone,
        other => panic!("unknown vector format {other}"),
    }
}

/// The literal text of each value in each vector's `expected` object, in file order,
/// so the precision can be taken from the digits as written.
fn expected_literals(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"expected\": {") {
        let body_start = i + "\"expected\": {".len();
        let end = body_start + rest[body_start..].find('}').expect("closing brace");
        let body = &rest[body_start..end];
        let mut pairs = Vec::new();
        for item in body.split(",\n") {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (k, v) = item.split_once(':').expect("key: value");
            pairs.push((k.trim().trim_matches('"').to_string(), v.trim().to_string()));
        }
        out.push(pairs);
        rest = &rest[end..];
    }
    out
}

fn tolerance(literal: &str) -> f64 {
    let decimals = literal.split_once('.').map_or(0, |(_, f)| f.len());
    0.5 * 10f64.powi(-(decimals as i32)) + 1e-9
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Text(_) => None,
    }
}

#[test]
fn all_vectors_decode_to_expected_values() {
    let text = std::fs::read_to_string(FILE).expect("vector file");
    let doc: J = serde_json::from_str(&text).expect("vector json");
    let vectors = doc["vectors"].as_array().expect("vectors array");
    let literals = expected_literals(&text);
    assert_eq!(vectors.len(), 71, "the vector set has 71 entries");
    assert_eq!(literals.len(), vectors.len());
    let mut checked_values = 0;
    let mut negatives = 0;
    let mut failures = Vec::new();
    for (v, lits) in vectors.iter().zip(&literals) {
        let id = v["id"].as_str().unwrap_or("?");
        let mac: Option<Mac> = v["mac"].as_str().map(|m| m.parse().expect("mac"));
        let key = v["bindkey_hex"]
            .as_str()
            .map(|k| hex::decode(k).expect("key hex"));
        let adv_hex = v["adv_data_hex"].as_str().expect("adv_data_hex");
        let adv_bytes = hex::decode(adv_hex).expect("adv hex");
        let (mut advert, truncated) = Advert::parse(mac, Some(-70), &adv_bytes).expect("advert");
        if id.starts_with("eddystone_etlm") {
            // beacontools' packet carries the eTLM salt and MIC *after* the declared
            // service-data length (its AD length covers only 14 of the 18 frame
            // bytes). Re-attach those trailing bytes as beacontools read them.
            assert!(truncated);
            let sd_len = adv_hex
                .find("1116aafe")
                .map(|i| i / 2 + 18)
                .expect("eTLM AD");
            let mut frame = advert.service_data16(0xfeaa).expect("feaa").to_vec();
            frame.extend_from_slice(&adv_bytes[sd_len..]);
            advert
                .service_data
                .insert(edgebus::sources::ble::advert::uuid16(0xfeaa), frame);
        }
        let want_format = format_for(v["format"].as_str().unwrap_or(""));
        assert_eq!(
            decode::detect(&advert),
            Some(want_format),
            "{id}: auto-detected format"
        );
        let result = decode::decode_auto(&advert, key.as_deref());
        if v["negative"].as_bool() == Some(true) {
            negatives += 1;
            if let Ok(Some((_, d))) = &result
                && !d.measurements.is_empty()
            {
                failures.push(format!(
                    "{id}: negative vector produced {:?}",
                    d.measurements
                ));
            }
            continue;
        }
        let decoded = match result {
            Ok(Some((_, d))) => d,
            other => {
                failures.push(format!("{id}: decode failed: {other:?}"));
                continue;
            }
        };
        for (k, lit) in lits {
            let (point, factor) = point_for(k);
            let Some(m) = decoded.measurements.iter().find(|m| m.name == point) else {
                failures.push(format!(
                    "{id}: no '{point}' for {k} in {:?}",
                    decoded.measurements
                ));
                continue;
            };
            checked_values += 1;
            let expected = &v["expected"][k];
            match expected {
                J::String(s) => {
                    let got = match &m.value {
                        Value::Text(t) => t.clone(),
                        other => format!("{other:?}"),
                    };
                    if !got.eq_ignore_ascii_case(s) {
                        failures.push(format!("{id}: {k}: got {got:?}, want {s:?}"));
                    }
                }
                J::Bool(b) => {
                    if m.value != Value::Bool(*b) {
                        failures.push(format!("{id}: {k}: got {:?}, want {b}", m.value));
                    }
                }
                J::Number(n) => {
                    let want = n.as_f64().expect("number");
                    let got = as_f64(&m.value).map(|g| g * factor);
                    match got {
                        Some(g) if (g - want).abs() <= tolerance(lit) * factor.max(1.0) => {}
                        _ => failures.push(format!(
                            "{id}: {k}: got {:?} (x{factor}), want {lit}",
                            m.value
                        )),
                    }
                }
                other => failures.push(format!("{id}: {k}: unexpected expected value {other}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(negatives, 5);
    let positive_keys: usize = vectors
        .iter()
        .filter(|v| v["negative"].as_bool() != Some(true))
        .map(|v| v["expected"].as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        checked_values, positive_keys,
        "every expected value was compared"
    );
    println!(
        "checked {checked_values} expected values in {} vectors",
        vectors.len()
    );
}
