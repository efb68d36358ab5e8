//! Cross-check against an independent decoder: every BTHome v2 object id we decode, fed
//! random values, must give the same number as the `bthome-ble` PyPI package (the
//! reference implementation Home Assistant uses). Needs `python3` + `pip install
//! bthome-ble`; skipped with a message locally when missing, a failure when `CI=true`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use edgebus::reading::Value;
use edgebus::sources::ble::decode::{DecodeCtx, bthome};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/bthome_decode.py");

/// Returns false (after saying why) when a peer is missing on a dev box; panics in CI.
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

/// Small deterministic generator (xorshift), so failures reproduce.
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
fn bthome_objects_match_bthome_ble() {
    let has = Command::new("python3")
        .args(["-c", "import bthome_ble, habluetooth"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !peer_available("python3 with the bthome-ble package", has) {
        return;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut payloads = Vec::new();
    for (id, _, len) in bthome::object_table() {
        // packet id and device-info objects are not sensor values in bthome-ble
        if id == 0x00 || id >= 0xF0 || id == 0x50 {
            continue;
        }
        for _ in 0..12 {
            let mut p = vec![0x40, id];
            match (id, len) {
                (0x53, _) => {
                    let n = 1 + rng.next() % 8;
                    p.push(n);
                    p.extend((0..n).map(|_| b'a' + rng.next() % 26));
                }
                (0x54, _) => {
                    let n = 1 + rng.next() % 8;
                    p.push(n);
                    p.extend((0..n).map(|_| rng.next()));
                }
                (_, Some(n)) => p.extend((0..n).map(|_| rng.next())),
                (_, None) => continue, // events
            }
            payloads.push(p);
        }
    }
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = payloads.iter().map(|p| hex::encode(p) + "\n").collect();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).expect("write");
    });
    let lines: Vec<String> = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map(|l| l.expect("line"))
        .collect();
    writer.join().expect("writer");
    assert!(child.wait().expect("wait").success());
    assert_eq!(lines.len(), payloads.len());

    let mut failures = Vec::new();
    let mut compared = 0;
    for (p, line) in payloads.iter().zip(&lines) {
        let theirs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).expect("json");
        let ours = bthome::decode(p, &DecodeCtx::default()).expect("decodes");
        let ours: Vec<_> = ours
            .measurements
            .into_iter()
            .filter(|m| m.name != "packet_id")
            .collect();
        let ctx = format!("payload {} ours {ours:?} theirs {line}", hex::encode(p));
        if theirs.len() != 1 || ours.len() != 1 {
            failures.push(format!("value count differs: {ctx}"));
            continue;
        }
        let t = theirs.values().next().expect("one");
        let same = match (&ours[0].value, t) {
            (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
            (Value::Text(a), serde_json::Value::String(b)) => a == b,
            (v, serde_json::Value::Number(n)) => match (v.as_f64(), n.as_f64()) {
                // 0x58 counts in 0.35 °C steps: bthome-ble rounds them to one decimal
                // (37.45 -> 37.4), we keep the exact step value.
                (Some(a), Some(b)) if p[1] == 0x58 => (a - b).abs() <= 0.05 + 1e-9,
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => false,
            },
            _ => false,
        };
        compared += 1;
        if !same {
            failures.push(format!("value differs: {ctx}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 800, "compared {compared}");
}
