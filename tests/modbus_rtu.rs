//! Modbus RTU on a pseudo-terminal pair with a byte-level fake slave on the other end: the
//! 3.5-character silence and the slave-switch delay on the wire, and garbled answers
//! (wrong unit id, CRC error, truncated frame) turning into counters and bad quality.

mod emulation;
mod modbus_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgebus::reading::{Quality, Value};
use modbus_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialStream};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Good,
    WrongUnit,
    BadCrc,
    Truncated,
}

#[derive(Debug, Clone)]
struct Exchange {
    unit: u8,
    request_at: Instant,
    answered_at: Instant,
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Answers FC 3 reads of one register with `unit * 100`, shaped by `mode`.
fn spawn_slave(mut master: SerialStream, mode: Arc<Mutex<Mode>>, log: Arc<Mutex<Vec<Exchange>>>) {
    tokio::spawn(async move {
        let mut req = [0u8; 8];
        loop {
            if master.read_exact(&mut req).await.is_err() {
                return;
            }
            let request_at = Instant::now();
            if crc16(&req[..6]).to_le_bytes() != [req[6], req[7]] || req[1] != 3 {
                continue;
            }
            let unit = req[0];
            let value = u16::from(unit) * 100;
            let m = *mode.lock().unwrap();
            let answer_unit = if m == Mode::WrongUnit {
                unit.wrapping_add(1)
            } else {
                unit
            };
            let mut frame = vec![answer_unit, 3, 2, (value >> 8) as u8, value as u8];
            let mut crc = crc16(&frame);
            if m == Mode::BadCrc {
                crc ^= 0x5A5A;
            }
            frame.extend_from_slice(&crc.to_le_bytes());
            if m == Mode::Truncated {
                frame.truncate(4);
            }
            if master.write_all(&frame).await.is_err() {
                return;
            }
            let _ = master.flush().await;
            log.lock().unwrap().push(Exchange {
                unit,
                request_at,
                answered_at: Instant::now(),
            });
        }
    });
}

struct Line {
    path: String,
    _slave: SerialStream,
    mode: Arc<Mutex<Mode>>,
    log: Arc<Mutex<Vec<Exchange>>>,
}

fn line() -> Line {
    let (master, slave) = SerialStream::pair().expect("pseudo-terminal pair");
    let path = slave.name().expect("pty name");
    let mode = Arc::new(Mutex::new(Mode::Good));
    let log = Arc::new(Mutex::new(Vec::new()));
    spawn_slave(master, mode.clone(), log.clone());
    // The slave end stays open for the test so the master never sees a hang-up.
    Line {
        path,
        _slave: slave,
        mode,
        log,
    }
}

fn yaml(path: &str, baud: u32, bus_extra: &str, devices: &str) -> String {
    format!(
        "gateway: {{ id: gw, data_dir: /tmp }}\nbuses:\n  - {{ name: line, type: modbus-rtu, port: \"{path}\", baud: {baud}, timeout: 200ms, retries: 1{bus_extra} }}\ndevices:\n{devices}"
    )
}

fn device(name: &str, unit: u8, poll: &str) -> String {
    format!(
        "  - name: {name}\n    bus: line\n    unit: {unit}\n    poll: {poll}\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_interval_and_slave_switch_delay_on_the_wire() {
    if !emulation::serial_usable("silent_interval_and_slave_switch_delay_on_the_wire") {
        return;
    }
    let l = line();
    // 1200 baud 8N1: 3.5 characters of 10 bits = 29.2 ms of silence before each request.
    let devices = device("a", 1, "10ms") + &device("b", 2, "10ms");
    let h = run_yaml(&yaml(&l.path, 1200, ", slave_switch_delay: 40ms", &devices));
    wait_for(10, "twelve exchanges", || l.log.lock().unwrap().len() >= 12).await;
    h.stop().await;
    assert_eq!(good(&h.last("a", "v")), Some(&Value::UInt(100)));
    assert_eq!(good(&h.last("b", "v")), Some(&Value::UInt(200)));
    let log = l.log.lock().unwrap().clone();
    let t35 = Duration::from_micros(29_166);
    let mut switches = 0;
    for w in log.windows(2) {
        // Measured from the slave's side: it finished writing before the master read the
        // answer, so the true silence on the line is at least this long.
        let silence = w[1].request_at - w[0].answered_at;
        let want = if w[0].unit == w[1].unit {
            t35
        } else {
            t35 + Duration::from_millis(40)
        };
        switches += usize::from(w[0].unit != w[1].unit);
        assert!(
            silence >= want,
            "{:?} -> {:?}: silence {silence:?} < {want:?}",
            w[0].unit,
            w[1].unit
        );
    }
    assert!(switches >= 4, "both slaves polled in turn: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_answers_are_counted_and_bad_never_fatal() {
    if !emulation::serial_usable("garbled_answers_are_counted_and_bad_never_fatal") {
        return;
    }
    let l = line();
    let h = run_yaml(&yaml(&l.path, 115_200, "", &device("s", 7, "30ms")));
    let n = |kind: &str| {
        counter(
            "edgebus_modbus_errors_total",
            &[("device", "s"), ("kind", kind)],
        )
    };
    wait_for(10, "good", || {
        good(&h.last("s", "v")) == Some(&Value::UInt(700))
    })
    .await;
    let bad_since = |h: &Harness, k: usize| {
        h.readings("s", "v")[k..]
            .iter()
            .any(|r| r.quality == Quality::Bad)
    };

    for (mode, kind) in [
        (Mode::WrongUnit, "protocol"),
        (Mode::BadCrc, "timeout"),
        (Mode::Truncated, "timeout"),
    ] {
        let before = n(kind);
        let k = h.readings("s", "v").len();
        *l.mode.lock().unwrap() = mode;
        wait_for(10, &format!("{mode:?} counted as {kind}"), || {
            n(kind) >= before + 2
        })
        .await;
        wait_for(10, &format!("{mode:?} gives bad quality"), || {
            bad_since(&h, k)
        })
        .await;
        *l.mode.lock().unwrap() = Mode::Good;
        wait_for(10, &format!("good again after {mode:?}"), || {
            h.last("s", "v").is_some_and(|r| r.quality == Quality::Good)
        })
        .await;
    }
    // Silence through garbage took the device offline; good answers brought it back.
    let av = h.availability("s");
    assert_eq!(av.first(), Some(&true));
    assert_eq!(av.last(), Some(&true));
    assert!(av.contains(&false), "{av:?}");
    assert!(!h.task.is_finished(), "the source keeps running");
    h.stop().await;
}
