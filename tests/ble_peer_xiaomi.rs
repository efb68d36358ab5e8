//! Cross-check against an independent decoder: MiBeacon objects with random values must
//! decode to the same numbers as the `xiaomi-ble` PyPI package. Needs `python3` + `pip
//! install xiaomi-ble`; skipped with a message locally when missing, a failure when `CI=true`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use edgebus::sources::ble::advert::Mac;
use edgebus::sources::ble::decode::{DecodeCtx, mibeacon};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/xiaomi_decode.py");

fn peer_available(what: &str, ok: bool) -> bool {
    if !ok {
        let msg = format!("skipping: {what} is not installed");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (required in CI)");
        }
        eprintln!("{msg}");
    }
    ok
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

#[test]
fn mibeacon_objects_match_xiaomi_ble() {
    let has = Command::new("python3")
        .args(["-c", "import xiaomi_ble, habluetooth"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !peer_available("python3 with the xiaomi-ble package", has) {
        return;
    }
    let mac: Mac = "A4:C1:38:B4:94:4C".parse().unwrap();
    let mut mac_le = mac.0;
    mac_le.reverse();
    // (product id, object id, value length): objects as the products that send them
    let cases: &[(u16, u16, usize)] = &[
        (0x0347, 0x1004, 2),
        (0x0347, 0x1006, 2),
        (0x055B, 0x1006, 2),
        (0x0347, 0x100D, 4),
        (0x0347, 0x100A, 1),
        (0x01AA, 0x100A, 1),
        (0x0098, 0x1007, 3),
        (0x0098, 0x1008, 1),
        (0x0098, 0x1009, 2),
        (0x02DF, 0x1010, 2),
        (0x2832, 0x4801, 4),
        (0x2832, 0x4802, 1),
        (0x2832, 0x4803, 1),
        (0x55B5, 0x4C01, 4),
        (0x55B5, 0x4C02, 1),
        (0x55B5, 0x4C03, 1),
        (0x55B5, 0x4C08, 4),
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut frames = Vec::new();
    for &(product, obj, len) in cases {
        for k in 0..20u8 {
            let mut f = vec![0x50, 0x50]; // v5, object + MAC included, plain
            f.extend_from_slice(&product.to_le_bytes());
            f.push(k);
            f.extend_from_slice(&mac_le);
            f.extend_from_slice(&obj.to_le_bytes());
            f.push(len as u8);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next()).collect();
            if len == 4 && (obj & 0xFF00) != 0x1000 {
                // floats: keep them in a sensor's range
                let x = (i16::from_le_bytes([v[0], v[1]]) as f32) / 327.0;
                v = x.to_le_bytes().to_vec();
            }
            if obj == 0x100A
                || obj == 0x4803
                || obj == 0x4C03
                || obj == 0x1008
                || obj == 0x4802
                || obj == 0x4C02
            {
                v[0] %= 101; // percentages
            }
            f.extend_from_slice(&v);
            frames.push(f);
        }
    }
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = frames
        .iter()
        .map(|f| format!("{mac} {}\n", hex::encode(f)))
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).expect("write"));
    let lines: Vec<String> = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map(|l| l.expect("line"))
        .collect();
    writer.join().expect("writer");
    assert!(child.wait().expect("wait").success());
    assert_eq!(lines.len(), frames.len());

    let mut failures = Vec::new();
    let mut compared = 0;
    for (f, line) in frames.iter().zip(&lines) {
        let theirs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).expect("json");
        let ours = mibeacon::decode(
            f,
            &DecodeCtx {
                mac: Some(mac),
                bind_key: None,
            },
        )
        .expect("decodes");
        let ctx = format!(
            "frame {} ours {:?} theirs {line}",
            hex::encode(f),
            ours.measurements
        );
        if theirs.is_empty() || theirs.contains_key("error") {
            failures.push(format!("peer decoded nothing: {ctx}"));
            continue;
        }
        for (k, tv) in &theirs {
            let Some(m) = ours.measurements.iter().find(|m| m.name == k.as_str()) else {
                failures.push(format!("missing {k}: {ctx}"));
                continue;
            };
            compared += 1;
            let (Some(a), Some(b)) = (m.value.as_f64(), tv.as_f64()) else {
                failures.push(format!("{k} not numeric: {ctx}"));
                continue;
            };
            // xiaomi-ble rounds floats to 1 or 2 decimals; we keep 2
            if (a - b).abs() > 0.051 {
                failures.push(format!("{k} differs: {ctx}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {compared} values:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 300, "compared {compared}");
}
