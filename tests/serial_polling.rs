//! Request/response polling against a sensor simulated on the far side of a real pty: the
//! source writes the command every interval, reads the reply lines with a timeout, keeps
//! two polled devices on one line from talking over each other, and reports a device that
//! stops answering offline.

mod emulation;
mod serial_support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use edgebus::reading::Value;
use edgebus::sources::serial::engine::SerialStats;
use serial_support::{Pty, Responder, Running, source_from_yaml, yaml};

const DEVICES: &str = r#"  - name: dust
    bus: line
    poll: 300ms
    match: "^pm"
    request: { command: "READ\r\n", timeout: 150ms, lines: 2, offline_after: 2 }
    parser: { type: kv }
    points:
      - { name: pm25, field: pm25, type: uint }
      - { name: pm10, field: pm10, type: uint }
  - name: th
    bus: line
    poll: 300ms
    request: { command: "?2\r\n", timeout: 150ms }
    parser: { type: csv, columns: [addr, temperature, humidity] }
    points:
      - { name: temperature, field: temperature, unit: "°C" }
      - { name: humidity, field: humidity, unit: "%" }
"#;

#[tokio::test]
async fn request_response_polling() {
    if !emulation::serial_usable("request_response_polling") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-FTDI_USB-RS485_Cable-if00-port0");
    let pty = Pty::new(&link);
    let mute_dust = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let n = Arc::new(AtomicU32::new(0));
    let (mute, seen, count) = (mute_dust.clone(), log.clone(), n.clone());
    let _sensor = Responder::spawn(pty.master_clone(), move |cmd| {
        let cmd = String::from_utf8_lossy(cmd).into_owned();
        seen.lock().unwrap().push(cmd.clone());
        let k = count.fetch_add(1, Ordering::Relaxed);
        match cmd.as_str() {
            // Echoes the command, as many sensors do, then two lines.
            "READ\r\n" if !mute.load(Ordering::Relaxed) => {
                Some(format!("READ\r\npm25={}\r\npm10={}\r\n", 10 + k, 20 + k).into_bytes())
            }
            "?2\r\n" => Some(b"2,21.5,40\r\n".to_vec()),
            _ => None,
        }
    });
    let mut run = Running::start(source_from_yaml(&yaml(&link, "    baud: 9600\n", DEVICES)));

    let (r, a) = run.readings(8, 10).await;
    assert!(
        a.contains(&("dust".to_string(), true)) && a.contains(&("th".to_string(), true)),
        "{a:?}"
    );
    let dust: Vec<(String, Value)> = r
        .iter()
        .filter(|x| &*x.device == "dust")
        .map(|x| (x.point.to_string(), x.value.clone()))
        .collect();
    let th: Vec<(String, Value)> = r
        .iter()
        .filter(|x| &*x.device == "th")
        .map(|x| (x.point.to_string(), x.value.clone()))
        .collect();
    // Each poll gives both points of its device: pm25 then pm10 from the same reply.
    for pair in dust.chunks(2) {
        let (Value::UInt(a), Value::UInt(b)) = (&pair[0].1, &pair[1].1) else {
            panic!("{pair:?}")
        };
        assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("pm25", "pm10"));
        assert_eq!(b - a, 10, "both lines of one reply");
    }
    for pair in th.chunks(2) {
        assert_eq!(
            pair,
            [
                ("temperature".to_string(), Value::Float(21.5)),
                ("humidity".to_string(), Value::Float(40.0))
            ]
        );
    }
    {
        // Requests alternate: the line is never asked twice before an answer or timeout.
        let log = log.lock().unwrap();
        assert!(log.len() >= 4, "{log:?}");
        assert!(
            log.windows(2).all(|w| w[0] != w[1]),
            "requests interleave: {log:?}"
        );
    }
    assert!(
        SerialStats::get(&run.stats.ignored) >= 1,
        "echoed command is not data"
    );

    // The dust sensor stops answering: offline after two missed replies; `th` stays online.
    mute_dust.store(true, Ordering::Relaxed);
    assert!(!run.availability("dust", 10).await);
    assert!(SerialStats::get(&run.stats.poll_timeouts) >= 2);
    // It answers again: online again.
    mute_dust.store(false, Ordering::Relaxed);
    assert!(run.availability("dust", 10).await);
    run.stop().await;
    drop(pty);
}
