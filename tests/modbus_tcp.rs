//! Modbus TCP against an in-process tokio-modbus server: decoding, planning, fallback,
//! silent slaves, exceptions, writes and reconnects.

mod modbus_support;

use std::collections::BTreeMap;
use std::time::Duration;

use edgebus::reading::{Quality, Value};
use modbus_support::*;
use tokio_modbus::prelude::ExceptionCode;

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// Wire position of each big-endian byte, written out per order (independent of the codec).
fn permute(be: &[u8], order: &str) -> Vec<u16> {
    let perm: Vec<usize> = match (be.len(), order) {
        (2, "ABCD" | "CDAB") => vec![0, 1],
        (2, _) => vec![1, 0],
        (4, "ABCD") => vec![0, 1, 2, 3],
        (4, "CDAB") => vec![2, 3, 0, 1],
        (4, "BADC") => vec![1, 0, 3, 2],
        (4, "DCBA") => vec![3, 2, 1, 0],
        (8, "ABCD") => vec![0, 1, 2, 3, 4, 5, 6, 7],
        (8, "CDAB") => vec![6, 7, 4, 5, 2, 3, 0, 1],
        (8, "BADC") => vec![1, 0, 3, 2, 5, 4, 7, 6],
        (8, "DCBA") => vec![7, 6, 5, 4, 3, 2, 1, 0],
        _ => unreachable!(),
    };
    let wire: Vec<u8> = perm.iter().map(|&i| be[i]).collect();
    wire.chunks(2)
        .map(|c| u16::from(c[0]) << 8 | u16::from(c[1]))
        .collect()
}

fn header(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "gateway: {{ id: gw, data_dir: /tmp }}\nbuses:\n  - {{ name: plc, type: modbus-tcp, host: 127.0.0.1, port: {}, timeout: 300ms, retries: 1, reconnect_min: 50ms, reconnect_max: 200ms{extra} }}\n",
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decodes_every_type_and_order_exactly() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    let values: Vec<(&str, Vec<u8>, Value)> = vec![
        ("u16", 0xBEEFu16.to_be_bytes().to_vec(), Value::UInt(0xBEEF)),
        (
            "i16",
            (-12345i16).to_be_bytes().to_vec(),
            Value::Int(-12345),
        ),
        (
            "u32",
            0xDEAD_BEEFu32.to_be_bytes().to_vec(),
            Value::UInt(0xDEAD_BEEF),
        ),
        (
            "i32",
            (-123_456_789i32).to_be_bytes().to_vec(),
            Value::Int(-123_456_789),
        ),
        (
            "u64",
            0x0123_4567_89AB_CDEFu64.to_be_bytes().to_vec(),
            Value::UInt(0x0123_4567_89AB_CDEF),
        ),
        (
            "i64",
            (-1_234_567_890_123_456_789i64).to_be_bytes().to_vec(),
            Value::Int(-1_234_567_890_123_456_789),
        ),
        (
            "f32",
            (-3.25f32).to_be_bytes().to_vec(),
            Value::Float(-3.25),
        ),
        (
            "f64",
            6.022_140_76e23f64.to_be_bytes().to_vec(),
            Value::Float(6.022_140_76e23),
        ),
    ];
    let mut points = String::new();
    let mut expect: BTreeMap<String, Value> = BTreeMap::new();
    let mut addr = 0u16;
    sim.unit(1, |u| {
        for order in ORDERS {
            for (ty, be, v) in &values {
                let regs = permute(be, order);
                u.holding[usize::from(addr)..usize::from(addr) + regs.len()].copy_from_slice(&regs);
                let name = format!("{ty}_{order}");
                points += &format!("      - {{ name: {name}, register: holding, address: {addr}, type: {ty}, order: {order} }}\n");
                expect.insert(name, v.clone());
                addr += regs.len() as u16;
            }
        }
        // "EDGEBUS-1" in 5 registers, straight and byte-swapped.
        let text = b"EDGEBUS-1\0";
        for (i, c) in text.chunks(2).enumerate() {
            u.holding[100 + i] = u16::from(c[0]) << 8 | u16::from(c[1]);
            u.holding[105 + i] = u16::from(c[1]) << 8 | u16::from(c[0]);
        }
        points += "      - { name: text, register: holding, address: 100, type: string, length: 5 }\n";
        points += "      - { name: text_swapped, register: holding, address: 105, type: string, length: 5, order: BADC }\n";
        expect.insert("text".into(), Value::Text("EDGEBUS-1".into()));
        expect.insert("text_swapped".into(), Value::Text("EDGEBUS-1".into()));
        u.holding[110] = 0b1000_0000_0000_0100;
        points += "      - { name: bit2, register: holding, address: 110, bit: 2 }\n";
        points += "      - { name: bit3, register: holding, address: 110, bit: 3 }\n";
        points += "      - { name: bit15, register: holding, address: 110, bit: 15 }\n";
        expect.insert("bit2".into(), Value::Bool(true));
        expect.insert("bit3".into(), Value::Bool(false));
        expect.insert("bit15".into(), Value::Bool(true));
        // Scale and offset: raw 523 * 0.1 - 40 = 12.3 (within float rounding of the formula).
        u.input[7] = 523;
        points += "      - { name: temp, register: input, address: 7, type: u16, scale: 0.1, offset: -40, unit: degC }\n";
        expect.insert("temp".into(), Value::Float(523.0 * 0.1 - 40.0));
        u.input[8] = (-5i16) as u16;
        points += "      - { name: neg, register: input, address: 8, type: i16 }\n";
        expect.insert("neg".into(), Value::Int(-5));
        u.coils[3] = true;
        u.discrete[9] = true;
        points += "      - { name: coil3, register: coil, address: 3 }\n";
        points += "      - { name: coil4, register: coil, address: 4 }\n";
        points += "      - { name: di9, register: discrete_input, address: 9 }\n";
        expect.insert("coil3".into(), Value::Bool(true));
        expect.insert("coil4".into(), Value::Bool(false));
        expect.insert("di9".into(), Value::Bool(true));
    });
    let yaml = format!(
        "{}devices:\n  - name: dev\n    bus: plc\n    unit: 1\n    poll: 1h\n    points:\n{points}",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "all points read", || {
        expect.keys().all(|p| h.last("dev", p).is_some())
    })
    .await;
    for (point, want) in &expect {
        let r = h.last("dev", point).unwrap();
        assert_eq!(r.quality, Quality::Good, "{point}");
        assert_eq!(&r.value, want, "{point}");
    }
    assert_eq!(h.last("dev", "temp").unwrap().unit.as_deref(), Some("degC"));
    // One cycle: holding 0..80 and 100..111 (the 20-register hole exceeds max_gap), input
    // 7..9, coils 3..5, discrete 9: 5 requests, as planned.
    assert_eq!(h.planned, vec![5]);
    assert_eq!(sim.count(1), 5);
    h.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_receives_exactly_the_planned_requests() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    // Eastron-style map: 30 f32 every 6 registers on unit 1 (gaps of 4) and the same on
    // unit 2 with max_gap 0 (a device that refuses reads across holes).
    let mut points = String::new();
    for i in 0..30u16 {
        points += &format!(
            "      - {{ name: p{i}, register: input, address: {}, type: f32 }}\n",
            i * 6
        );
    }
    sim.unit(1, |_| ());
    sim.unit(2, |_| ());
    let yaml = format!(
        "{}devices:\n  - name: merged\n    bus: plc\n    unit: 1\n    poll: 100ms\n    points:\n{points}  - name: strict\n    bus: plc\n    unit: 2\n    max_gap: 0\n    poll: 100ms\n    points:\n{points}",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    assert_eq!(h.planned, vec![2, 30]);
    wait_for(10, "three cycles", || {
        h.readings("strict", "p29").len() >= 3
    })
    .await;
    h.stop().await;
    let log = sim.log();
    for (unit, planned) in [(1u8, 2usize), (2, 30)] {
        let mut per_range: BTreeMap<(u16, u16), usize> = BTreeMap::new();
        for r in log.iter().filter(|r| r.unit == unit) {
            assert_eq!(r.fc, 4);
            *per_range.entry((r.address, r.count)).or_default() += 1;
        }
        // Exactly the planned ranges, each once per cycle (the last cycle may be cut short).
        assert_eq!(per_range.len(), planned, "unit {unit}: {per_range:?}");
        let (min, max) = (
            per_range.values().min().unwrap(),
            per_range.values().max().unwrap(),
        );
        assert!(*min >= 3 && max - min <= 1, "unit {unit}: {per_range:?}");
    }
    let ranges: Vec<(u16, u16)> = log
        .iter()
        .filter(|r| r.unit == 1)
        .map(|r| (r.address, r.count))
        .take(2)
        .collect();
    assert_eq!(ranges, vec![(0, 122), (126, 50)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_address_falls_back_to_single_reads() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(1, |u| {
        u.holding[0] = 11;
        u.holding[2] = 0;
        u.holding[3] = 33;
        u.illegal.insert(1);
    });
    let yaml = format!(
        "{}devices:\n  - name: fb\n    bus: plc\n    unit: 1\n    poll: 100ms\n    points:\n      - {{ name: a, register: holding, address: 0 }}\n      - {{ name: hole, register: holding, address: 1 }}\n      - {{ name: c, register: holding, address: 2, type: u32 }}\n",
        header(server.addr, "")
    );
    let before = counter(
        "edgebus_modbus_errors_total",
        &[("device", "fb"), ("kind", "exception")],
    );
    let h = run_yaml(&yaml);
    wait_for(10, "two cycles", || h.readings("fb", "c").len() >= 2).await;
    h.stop().await;
    assert_eq!(good(&h.last("fb", "a")), Some(&Value::UInt(11)));
    assert_eq!(good(&h.last("fb", "c")), Some(&Value::UInt(33)));
    assert_eq!(h.last("fb", "hole").unwrap().quality, Quality::Bad);
    let log = sim.log();
    // The merged read was tried once, then never again.
    assert_eq!(log.iter().filter(|r| r.count == 4).count(), 1);
    assert!(
        log.iter()
            .filter(|r| (r.address, r.count) == (2, 2))
            .count()
            >= 2
    );
    let after = counter(
        "edgebus_modbus_errors_total",
        &[("device", "fb"), ("kind", "exception")],
    );
    // The merged read plus the hole once per cycle.
    assert!(after - before >= 3, "{before} -> {after}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slave_is_backed_off_and_does_not_stall_the_others() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(1, |u| u.holding[0] = 1);
    sim.unit(2, |u| u.holding[0] = 2);
    sim.unit(3, |u| u.silent = true);
    let dev = |name: &str, unit: u8| {
        format!(
            "  - name: {name}\n    bus: plc\n    unit: {unit}\n    poll: 20ms\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n"
        )
    };
    let yaml = format!(
        "{}devices:\n{}{}{}",
        header(server.addr, ", backoff_max: 800ms"),
        dev("one", 1),
        dev("two", 2),
        dev("mute", 3)
    );
    let t_before = counter(
        "edgebus_modbus_errors_total",
        &[("device", "mute"), ("kind", "timeout")],
    );
    let h = run_yaml(&yaml);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = sim.log();
    let units: Vec<u8> = log.iter().map(|r| r.unit).collect();
    // Every request to the silent unit costs a full timeout (300 ms), after which units 1
    // and 2 (polled every 20 ms) are overdue: they must be served before the silent unit
    // is tried again, so two silent attempts are never back to back.
    for w in units.windows(2) {
        assert!(
            !(w[0] == 3 && w[1] == 3),
            "two timeouts in a row: {units:?}"
        );
    }
    let (n1, n3) = (sim.count(1), sim.count(3));
    assert!(n3 >= 3, "the silent unit is still probed: {n3}");
    // Backed off: at most ~3 s / 300 ms attempts even without the skip, far fewer with it.
    assert!(n3 <= 9, "silent unit tried {n3} times");
    assert!(n1 >= 2 * n3, "unit 1 polled {n1} times, silent unit {n3}");
    // The skip interval grows: the gaps between silent attempts increase (after the retry).
    let at: Vec<_> = log.iter().filter(|r| r.unit == 3).map(|r| r.at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last().unwrap() > &gaps[1], "{gaps:?}");
    assert_eq!(h.availability("mute"), vec![false]);
    assert_eq!(h.availability("one"), vec![true]);
    let online = |d: &str| counter("edgebus_modbus_device_online", &[("device", d)]);
    assert_eq!((online("mute"), online("one")), (0, 1));
    assert_eq!(h.availability("two"), vec![true]);
    assert!(
        h.readings("one", "v")
            .iter()
            .all(|r| r.quality == Quality::Good)
    );
    assert_eq!(h.last("mute", "v").unwrap().quality, Quality::Bad);
    let t_after = counter(
        "edgebus_modbus_errors_total",
        &[("device", "mute"), ("kind", "timeout")],
    );
    assert_eq!(t_after - t_before, n3 as u64);
    assert_eq!(
        counter(
            "edgebus_modbus_errors_total",
            &[("device", "one"), ("kind", "timeout")]
        ),
        0
    );

    // It comes back by itself.
    sim.unit(3, |u| {
        u.silent = false;
        u.holding[0] = 3;
    });
    wait_for(10, "silent unit back online", || {
        h.availability("mute") == vec![false, true]
    })
    .await;
    assert_eq!(online("mute"), 1);
    wait_for(5, "good reading", || {
        good(&h.last("mute", "v")) == Some(&Value::UInt(3))
    })
    .await;
    h.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_give_bad_quality_and_counters() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(5, |u| u.fail = Some(ExceptionCode::ServerDeviceFailure));
    let yaml = format!(
        "{}devices:\n  - name: broken\n    bus: plc\n    unit: 5\n    poll: 50ms\n    points:\n      - {{ name: v, register: input, address: 0, type: f32 }}\n",
        header(server.addr, "")
    );
    let before = counter(
        "edgebus_modbus_errors_total",
        &[("device", "broken"), ("kind", "exception")],
    );
    let h = run_yaml(&yaml);
    wait_for(10, "three bad readings", || {
        h.readings("broken", "v").len() >= 3
    })
    .await;
    h.stop().await;
    let rs = h.readings("broken", "v");
    assert!(rs.iter().all(|r| r.quality == Quality::Bad));
    // No good value yet: the bad reading carries NaN (published as null).
    assert!(matches!(rs[0].value, Value::Float(f) if f.is_nan()));
    // An exception is an answer: the device is online, only its data is bad.
    assert_eq!(h.availability("broken"), vec![true]);
    let after = counter(
        "edgebus_modbus_errors_total",
        &[("device", "broken"), ("kind", "exception")],
    );
    assert_eq!(after - before, sim.count(5) as u64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_with_the_right_encoding() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(1, |u| {
        u.holding[20] = 0b1;
        u.illegal.insert(30);
    });
    let points = "      - { name: setpoint, register: holding, address: 0, type: f32, order: CDAB, writable: true }
      - { name: temp_x10, register: holding, address: 2, type: i16, scale: 0.1, writable: true }
      - { name: big, register: holding, address: 4, type: u32, writable: true }
      - { name: label, register: holding, address: 6, type: string, length: 3, writable: true }
      - { name: relay, register: coil, address: 7, writable: true }
      - { name: flag, register: holding, address: 20, bit: 4, writable: true }
      - { name: latched, register: holding, address: 21, writable: true, apply_retained: true }
      - { name: guarded, register: holding, address: 22, writable: true }
      - { name: nowhere, register: holding, address: 30, writable: true }
";
    let yaml = format!(
        "{}devices:\n  - name: w\n    bus: plc\n    unit: 1\n    poll: 1h\n    max_gap: 0\n    points:\n{points}",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "first cycle", || h.last("w", "relay").is_some()).await;
    h.set("w", "setpoint", "21.5", false).await;
    h.set("w", "temp_x10", r#"{"value": -12.3}"#, false).await;
    h.set("w", "big", "4000000000", false).await;
    h.set("w", "label", r#""ab""#, false).await;
    h.set("w", "relay", "on", false).await;
    h.set("w", "flag", "true", false).await;
    h.set("w", "latched", "7", true).await;
    h.set("w", "guarded", "9", true).await;
    h.set("w", "big", "-1", false).await;
    h.set("w", "nowhere", "1", false).await;
    wait_for(10, "eight results", || h.publishes().len() >= 8).await;
    // Read back after the writes (the source polls a written device again at once).
    wait_for(10, "read back", || {
        good(&h.last("w", "big")) == Some(&Value::UInt(4_000_000_000))
    })
    .await;
    let results = h.publishes();
    let ok = |topic: &str| {
        results
            .iter()
            .filter(|(t, v)| t == topic && v["ok"] == true)
            .count()
    };
    let err = |topic: &str| {
        results
            .iter()
            .filter(|(t, v)| t == topic && v["ok"] == false)
            .count()
    };
    for p in ["setpoint", "temp_x10", "label", "relay", "flag", "latched"] {
        assert_eq!(ok(&format!("w/{p}/set/result")), 1, "{p}: {results:?}");
    }
    assert_eq!(ok("w/big/set/result"), 1);
    assert_eq!(err("w/big/set/result"), 1, "negative u32 refused");
    assert_eq!(err("w/nowhere/set/result"), 1);
    let nowhere = results
        .iter()
        .find(|(t, _)| t == "w/nowhere/set/result")
        .unwrap();
    assert!(
        nowhere.1["error"].as_str().unwrap().contains("exception"),
        "{nowhere:?}"
    );
    // A retained set without apply_retained is ignored: no write, no result.
    assert!(results.iter().all(|(t, _)| t != "w/guarded/set/result"));
    sim.unit(1, |u| {
        assert_eq!(&u.holding[0..2], &[0x0000, 0x41AC]); // 21.5f32 = 0x41AC0000, CDAB
        assert_eq!(u.holding[2], (-123i16) as u16);
        assert_eq!(&u.holding[4..6], &[0xEE6B, 0x2800]);
        assert_eq!(&u.holding[6..9], &[0x6162, 0, 0]);
        assert!(u.coils[7]);
        assert_eq!(u.holding[20], 0b1_0001, "bit 4 set, bit 0 kept");
        assert_eq!(u.holding[21], 7);
        assert_eq!(u.holding[22], 0);
    });
    // Function codes: 16 for multi-register values, 6 for one register, 5 for a coil.
    let log = sim.log();
    let fc_at = |a: u16| {
        log.iter()
            .filter(|r| r.address == a && r.fc >= 5)
            .map(|r| r.fc)
            .collect::<Vec<_>>()
    };
    assert_eq!(fc_at(0), vec![16]);
    assert_eq!(fc_at(2), vec![6]);
    assert_eq!(fc_at(7), vec![5]);
    assert_eq!(fc_at(20), vec![6]);
    assert_eq!(good(&h.last("w", "setpoint")), Some(&Value::Float(21.5)));
    h.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_recovered() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    let addr = server.addr;
    sim.unit(1, |u| u.holding[0] = 1);
    let yaml = format!(
        "{}devices:\n  - name: link\n    bus: plc\n    unit: 1\n    poll: 50ms\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n",
        header(addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "online", || h.availability("link") == vec![true]).await;
    let fails_before = counter("edgebus_modbus_connect_failures_total", &[("bus", "plc")]);
    server.stop().await;
    wait_for(10, "offline", || {
        h.availability("link") == vec![true, false]
    })
    .await;
    wait_for(10, "reconnect attempts", || {
        counter("edgebus_modbus_connect_failures_total", &[("bus", "plc")]) > fails_before
    })
    .await;
    sim.unit(1, |u| u.holding[0] = 2);
    let server = TcpSim::start_on(&sim, addr).await;
    wait_for(10, "online again", || {
        h.availability("link") == vec![true, false, true]
    })
    .await;
    wait_for(5, "new value", || {
        good(&h.last("link", "v")) == Some(&Value::UInt(2))
    })
    .await;
    h.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_multiple_devices_get_fc15_and_fc16_and_retained_when_told() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(4, |_| ());
    let yaml = format!(
        "{}devices:\n  - name: m\n    bus: plc\n    unit: 4\n    poll: 1h\n    write_multiple: true\n    apply_retained: true\n    points:\n      - {{ name: reg, register: holding, address: 3, type: i16, writable: true }}\n      - {{ name: coil, register: coil, address: 9, writable: true }}\n",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "first cycle", || h.last("m", "coil").is_some()).await;
    h.set("m", "reg", "-2", true).await;
    h.set("m", "coil", "1", true).await;
    wait_for(10, "two results", || h.publishes().len() >= 2).await;
    h.stop().await;
    assert!(
        h.publishes().iter().all(|(_, v)| v["ok"] == true),
        "{:?}",
        h.publishes()
    );
    sim.unit(4, |u| {
        assert_eq!(u.holding[3], 0xFFFE);
        assert!(u.coils[9]);
    });
    let fcs: Vec<u8> = sim
        .log()
        .iter()
        .filter(|r| r.fc >= 5)
        .map(|r| r.fc)
        .collect();
    assert_eq!(fcs, vec![16, 15]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_target_failure_counts_as_a_silent_slave() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(6, |u| u.fail = Some(ExceptionCode::GatewayTargetDevice));
    sim.unit(7, |u| u.holding[0] = 70);
    let yaml = format!(
        "{}devices:\n  - name: behind\n    bus: plc\n    unit: 6\n    poll: 50ms\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n  - name: ok\n    bus: plc\n    unit: 7\n    poll: 50ms\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "offline", || h.availability("behind") == vec![false]).await;
    sim.unit(6, |u| u.fail = None);
    wait_for(10, "back", || h.availability("behind") == vec![false, true]).await;
    h.stop().await;
    assert_eq!(h.availability("ok"), vec![true]);
    assert_eq!(good(&h.last("ok", "v")), Some(&Value::UInt(70)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_slave_keeps_its_own_poll_interval() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(1, |_| ());
    sim.unit(2, |_| ());
    let dev = |name: &str, unit: u8, poll: &str| {
        format!(
            "  - name: {name}\n    bus: plc\n    unit: {unit}\n    poll: {poll}\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n"
        )
    };
    let yaml = format!(
        "{}devices:\n{}{}",
        header(server.addr, ""),
        dev("fast", 1, "40ms"),
        dev("slow", 2, "400ms")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "slow polled four times", || sim.count(2) >= 4).await;
    h.stop().await;
    let (fast, slow) = (sim.count(1), sim.count(2));
    // 10x the rate by configuration; allow a lot of scheduling slack.
    assert!(fast >= 4 * slow, "fast {fast}, slow {slow}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_out_a_long_timeout() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(9, |u| u.silent = true);
    let yaml = format!(
        "{}devices:\n  - name: mute\n    bus: plc\n    unit: 9\n    timeout: 30s\n    points:\n      - {{ name: v, register: holding, address: 0 }}\n",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "request sent", || sim.count(9) == 1).await;
    // Harness::stop allows 5 s; the pending request would take 30 s.
    h.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_hole_splits_into_contiguous_runs() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(1, |u| {
        // Only 0..6 and 20..24 exist, as on a meter that refuses unmapped registers.
        for a in (6..20).chain(24..40) {
            u.illegal.insert(a);
        }
        u.input[4] = 0x4366; // 230.5f32
        u.input[5] = 0x8000;
    });
    let mut points = String::new();
    for a in [0, 2, 4, 20, 22] {
        points += &format!("      - {{ name: p{a}, register: input, address: {a}, type: f32 }}\n");
    }
    let yaml = format!(
        "{}devices:\n  - name: m\n    bus: plc\n    unit: 1\n    poll: 50ms\n    max_gap: 20\n    points:\n{points}",
        header(server.addr, "")
    );
    let h = run_yaml(&yaml);
    wait_for(10, "three cycles", || h.readings("m", "p22").len() >= 3).await;
    h.stop().await;
    assert_eq!(good(&h.last("m", "p4")), Some(&Value::Float(230.5)));
    assert!(
        h.readings("m", "p0")
            .iter()
            .all(|r| r.quality == Quality::Good)
    );
    let mut seen: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for r in sim.log() {
        *seen.entry((r.address, r.count)).or_default() += 1;
    }
    // One refused merged read, then the two runs every cycle; never a read per point.
    assert_eq!(seen.get(&(0, 24)), Some(&1));
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![(0, 6), (0, 24), (20, 4)]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_answers_are_retried_counted_and_bad() {
    let sim = Sim::default();
    let server = TcpSim::start(&sim).await;
    sim.unit(8, |u| {
        u.short = true;
        u.holding[1] = 5;
    });
    let yaml = format!(
        "{}devices:\n  - name: short\n    bus: plc\n    unit: 8\n    poll: 50ms\n    points:\n      - {{ name: v, register: holding, address: 0, type: u32 }}\n",
        header(server.addr, "")
    );
    let before = counter(
        "edgebus_modbus_errors_total",
        &[("device", "short"), ("kind", "short")],
    );
    let h = run_yaml(&yaml);
    wait_for(10, "two bad readings", || {
        h.readings("short", "v").len() >= 2
    })
    .await;
    assert!(
        h.readings("short", "v")
            .iter()
            .all(|r| r.quality == Quality::Bad)
    );
    sim.unit(8, |u| u.short = false);
    wait_for(10, "good", || {
        good(&h.last("short", "v")) == Some(&Value::UInt(5))
    })
    .await;
    h.stop().await;
    let after = counter(
        "edgebus_modbus_errors_total",
        &[("device", "short"), ("kind", "short")],
    );
    // The first bad cycle retried at once (retries: 1); after it the slave delivered nothing
    // usable, so it went offline and later cycles were single probes (no retries).
    let bad = h
        .readings("short", "v")
        .iter()
        .filter(|r| r.quality == Quality::Bad)
        .count() as u64;
    let n = after - before;
    assert!(
        bad >= 2 && n > bad && n <= bad + 2,
        "{bad} bad readings, {n} short answers"
    );
    assert_eq!(h.availability("short"), vec![false, true]);
    server.stop().await;
}
