//! The BLE source end to end, in-process: a device map parsed like the real one, the
//! replay scanner feeding adverts, and the events the core would receive through the
//! source context. Also GATT against the fake client and the no-BlueZ path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgebus::config::Config;
use edgebus::reading::Value;
use edgebus::sources::ble::advert::Mac;
use edgebus::sources::ble::config::{ByteOrder, GattPoint};
use edgebus::sources::ble::gatt::{Backoff, GattDevice, ValueType, run_device};
use edgebus::sources::ble::scanner::fake::{FakeGatt, FakeScanner};
use edgebus::sources::ble::{BleSource, ScannerSpec};
use edgebus::sources::{Source, SourceContext, SourceEvent, build_all};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn load(dir: &std::path::Path, yaml: &str) -> Config {
    let file = dir.join("edgebus.yaml");
    std::fs::write(&file, yaml).unwrap();
    match Config::load(&file) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    }
}

struct Running {
    rx: mpsc::Receiver<SourceEvent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(source: Box<dyn Source>) -> Running {
    let (tx, rx) = mpsc::channel(1024);
    let (_ctx_tx, commands) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        events: tx,
        commands,
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(source.run(ctx));
    Running { rx, shutdown, task }
}

/// Collects events until `done` says so (or 20 s pass, which fails the test).
async fn collect_until(
    r: &mut Running,
    mut done: impl FnMut(&[SourceEvent]) -> bool,
) -> Vec<SourceEvent> {
    let mut evs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&evs) {
        match tokio::time::timeout_at(deadline, r.rx.recv()).await {
            Ok(Some(e)) => evs.push(e),
            Ok(None) => break,
            Err(_) => panic!("timed out; events so far: {evs:#?}"),
        }
    }
    evs
}

fn readings(evs: &[SourceEvent]) -> Vec<(String, String, Value)> {
    evs.iter()
        .filter_map(|e| match e {
            SourceEvent::Reading(r) => {
                Some((r.device.to_string(), r.point.to_string(), r.value.clone()))
            }
            _ => None,
        })
        .collect()
}

fn offline(evs: &[SourceEvent], dev: &str) -> bool {
    evs.iter().any(
        |e| matches!(e, SourceEvent::Availability { device, online: false } if &**device == dev),
    )
}

#[tokio::test]
async fn replay_drives_source_with_dedup_min_interval_privacy_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    // BTHome frames: packet id, temperature (0.01 °C). Frame 1 is re-sent (duplicate),
    // frame 2 arrives within the min interval (throttled), a stranger's sensor and an
    // iBeacon are not in the map, then the known device falls silent.
    let bt = |pid: u8, t: i16| {
        let b = t.to_le_bytes();
        format!("0201060b16d2fc4000{pid:02x}02{:02x}{:02x}0164", b[0], b[1])
    };
    let replay = [
        format!("A4:C1:38:8D:18:B2 -60 {}", bt(1, 2150)),
        format!("A4:C1:38:8D:18:B2 -61 {}", bt(1, 2150)),
        format!("11:22:33:44:55:66 -75 {}", bt(9, 1000)),
        "5E:11:22:33:44:55 -80 0201061aff4c000215fda50693a4e24fb1afcfc6eb0764782500010002c5"
            .to_string(),
        "this line is garbage".to_string(),
        format!("A4:C1:38:8D:18:B2 -62 {}", bt(2, 2160)),
    ]
    .join("\n");
    std::fs::write(dir.path().join("replay.txt"), replay).unwrap();
    let cfg = load(
        dir.path(),
        r#"
gateway: { id: test }
buses:
  - name: ble
    type: ble
    replay: replay.txt
    replay_interval: 1ms
    offline_after: 2s
    min_interval: 1h
devices:
  - { name: hall, bus: ble, mac: "A4:C1:38:8D:18:B2", decoder: bthome }
"#,
    );
    let built = build_all(&cfg).unwrap();
    assert!(
        built
            .catalog
            .iter()
            .any(|c| &*c.device == "hall" && c.point.name == "rssi")
    );
    let mut src = built.sources;
    assert_eq!(src.len(), 1);
    let mut run = start(src.remove(0).source);
    let evs = collect_until(&mut run, |e| offline(e, "hall")).await;
    run.shutdown.cancel();
    run.task.await.unwrap();

    let r = readings(&evs);
    let hall_temps: Vec<&Value> = r
        .iter()
        .filter(|(d, p, _)| d == "hall" && p == "temperature")
        .map(|x| &x.2)
        .collect();
    assert_eq!(
        hall_temps,
        vec![&Value::Float(21.5)],
        "one reading: the repeat is a duplicate, frame 2 is throttled"
    );
    assert!(r.contains(&("hall".into(), "rssi".into(), Value::Int(-60))));
    assert!(
        r.iter().all(|(d, _, _)| d == "hall"),
        "only mapped devices are published: {r:?}"
    );
    let avail: Vec<bool> = evs
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Availability { online, .. } => Some(*online),
            _ => None,
        })
        .collect();
    assert_eq!(
        avail,
        vec![true, false],
        "online when heard, offline after the silence"
    );
}

#[tokio::test]
async fn unknown_devices_published_under_keyed_hash_when_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.txt"),
        "11:22:33:44:55:66 -75 0201060b16d2fc400009020a0401ff\n5E:11:22:33:44:55 -80 0201061aff4c000215fda50693a4e24fb1afcfc6eb0764782500010002c5\n",
    )
    .unwrap();
    let cfg = load(
        dir.path(),
        r#"
gateway: { id: test }
buses:
  - name: ble
    type: ble
    replay: r.txt
    replay_interval: 1ms
    publish_unknown: { hash_key: "a-long-test-key-0123456789" }
devices: []
"#,
    );
    let mut run = start(build_all(&cfg).unwrap().sources.remove(0).source);
    let evs = collect_until(&mut run, |e| readings(e).iter().any(|r| r.1 == "rssi")).await;
    run.shutdown.cancel();
    run.task.await.unwrap();
    let r = readings(&evs);
    let want = edgebus::sources::ble::engine::hashed_name(
        b"a-long-test-key-0123456789",
        "ble-",
        "11:22:33:44:55:66".parse().unwrap(),
    );
    assert!(r.iter().all(|(d, _, _)| *d == want), "{r:?}");
    assert!(
        r.contains(&(want.clone(), "temperature".into(), Value::Float(10.34))),
        "{r:?}"
    );
    assert!(
        !format!("{evs:?}").contains("11:22:33"),
        "the MAC never leaves the gateway"
    );
}

#[tokio::test]
async fn sample_config_and_replay_file_work_together() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/config/ble.yaml")).unwrap();
    // as shipped (radio): must be valid
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), &text);
    // with the sample replay file instead of the radio
    let text = text
        .replace(
            "# replay: ble-replay.txt",
            &format!("replay: {root}/config/ble-replay.txt\n    replay_interval: 1ms"),
        )
        .replace("min_interval: 30s", "min_interval: 0s")
        .replace("min_interval: 60s", "min_interval: 0s");
    let cfg = load(dir.path(), &text);
    let mut run = start(build_all(&cfg).unwrap().sources.remove(0).source);
    let evs = collect_until(&mut run, |e| {
        let r = readings(e);
        ["living-room", "freezer", "bathroom"].iter().all(|d| {
            r.iter()
                .filter(|x| x.0 == *d && x.1 == "temperature")
                .count()
                >= 3
        })
    })
    .await;
    run.shutdown.cancel();
    run.task.await.unwrap();
    let r = readings(&evs);
    assert!(
        r.contains(&(
            "living-room".into(),
            "temperature".into(),
            Value::Float(21.12)
        )),
        "{r:?}"
    );
    assert!(r.contains(&(
        "living-room".into(),
        "battery_voltage".into(),
        Value::Float(3.143)
    )));
    assert!(
        !r.iter().any(|x| x.0 == "living-room" && x.1 == "voltage"),
        "the points list selects and renames"
    );
    assert!(
        r.iter().any(|x| x.0 == "living-room" && x.1 == "rssi"),
        "RSSI comes with the readings"
    );
    assert!(
        r.contains(&("freezer".into(), "temperature".into(), Value::Float(4.3))),
        "{r:?}"
    );
    assert!(
        r.contains(&("bathroom".into(), "temperature".into(), Value::Float(27.8))),
        "{r:?}"
    );
    assert!(
        r.iter()
            .all(|x| ["living-room", "freezer", "bathroom"].contains(&x.0.as_str())),
        "{r:?}"
    );
    // each pvvx frame is sent twice in the file: exactly three distinct readings
    assert_eq!(
        r.iter()
            .filter(|x| x.0 == "living-room" && x.1 == "temperature")
            .count(),
        3
    );
}

#[tokio::test]
async fn without_bluez_the_source_idles_until_shutdown() {
    let cfg = load(
        tempfile::tempdir().unwrap().path(),
        "gateway: { id: test }\nbuses: [{ name: ble, type: ble }]\ndevices: [{ name: x, bus: ble, mac: \"01:02:03:04:05:06\" }]\n",
    );
    let src = make_source(
        &cfg,
        ScannerSpec::Given(Box::new(FakeScanner::unavailable())),
    );
    let mut run = start(Box::new(src));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(
            run.rx.try_recv(),
            Ok(SourceEvent::Availability { online: false, .. })
        ),
        "the mapped device is reported offline"
    );
    assert!(run.rx.try_recv().is_err(), "nothing else is published");
    assert!(
        !run.task.is_finished(),
        "the source keeps running (and retrying) instead of ending"
    );
    run.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run.task)
        .await
        .unwrap()
        .unwrap();
}

fn make_source(cfg: &Config, scanner: ScannerSpec) -> BleSource {
    let devs: Vec<&edgebus::config::DeviceSpec> = cfg.devices.iter().collect();
    edgebus::sources::ble::build_ble(cfg, &cfg.buses[0], &devs)
        .unwrap()
        .0
        .with_scanner(scanner)
}

#[tokio::test]
async fn fake_scanner_feeds_the_source() {
    let cfg = load(
        tempfile::tempdir().unwrap().path(),
        "gateway: { id: test }\nbuses: [{ name: ble, type: ble, watchdog: { silence: 10s, reset_after: 1 } }]\ndevices: [{ name: hall, bus: ble, mac: \"A4:C1:38:8D:18:B2\" }]\n",
    );
    let (scanner, handle) = FakeScanner::new();
    let mut run = start(Box::new(make_source(
        &cfg,
        ScannerSpec::Given(Box::new(scanner)),
    )));
    let adv = edgebus::sources::ble::advert::Advert::parse(
        Some("A4:C1:38:8D:18:B2".parse().unwrap()),
        Some(-50),
        &hex::decode("0201060a16d2fc4002ca0903bf13").unwrap(),
    )
    .unwrap()
    .0;
    handle.tx.send(adv).await.unwrap();
    let evs = collect_until(&mut run, |e| readings(e).iter().any(|r| r.1 == "humidity")).await;
    assert!(readings(&evs).contains(&("hall".into(), "humidity".into(), Value::Float(50.55))));
    assert_eq!(handle.stats.starts.load(Ordering::SeqCst), 1);
    run.shutdown.cancel();
    run.task.await.unwrap();
}

fn gatt_device(mac: Mac, notify: bool) -> GattDevice {
    let p = |name: &str, ch: u128, t: ValueType, notify: bool| {
        (
            edgebus::config::PointCommon {
                name: name.into(),
                scale: if t == ValueType::I16 {
                    Some(0.01)
                } else {
                    None
                },
                ..Default::default()
            },
            GattPoint {
                service: "181a".into(),
                characteristic: "x".into(),
                value_type: t,
                at: 0,
                byte_order: ByteOrder::Little,
                notify,
                poll: Some(Duration::from_millis(50)),
            },
            edgebus::sources::ble::advert::uuid16(0x181a),
            ch,
        )
    };
    GattDevice {
        name: Arc::from("tracker"),
        mac,
        points: vec![
            p("battery", 0x2a19, ValueType::U8, false),
            p("temperature", 0x2a6e, ValueType::I16, notify),
        ],
        default_poll: Duration::from_secs(60),
        availability: true,
    }
}

#[tokio::test]
async fn gatt_polls_notifies_and_reconnects_with_backoff() {
    let mac: Mac = "11:22:33:44:55:66".parse().unwrap();
    let fake = Arc::new(FakeGatt::default());
    fake.fail_connects.store(3, Ordering::SeqCst);
    fake.set(mac, 0x2a19, vec![87]);
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_device(
        gatt_device(mac, true),
        fake.clone(),
        tx,
        stop.clone(),
        Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
    ));
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // offline while connects fail, online after, then the polled battery
    while !got
        .iter()
        .any(|e| matches!(e, SourceEvent::Reading(r) if &*r.point == "battery"))
    {
        got.push(
            tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        fake.connect_attempts.load(Ordering::SeqCst),
        4,
        "3 failures, then success"
    );
    assert!(matches!(
        &got[0],
        SourceEvent::Availability { online: false, .. }
    ));
    assert!(
        got.iter()
            .any(|e| matches!(e, SourceEvent::Availability { online: true, .. }))
    );
    assert!(
        got.iter()
            .any(|e| matches!(e, SourceEvent::Reading(r) if r.value == Value::UInt(87)))
    );
    // a notification: 0x0898 = 2200 * 0.01 = 22.0
    assert!(fake.notify(mac, 0x2a6e, vec![0x98, 0x08]));
    let ev = loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(&e, SourceEvent::Reading(r) if &*r.point == "temperature") {
            break e;
        }
    };
    let SourceEvent::Reading(r) = ev else {
        unreachable!()
    };
    assert_eq!(r.value, Value::Float(22.0));
    // the link drops: the task reconnects and subscribes again
    let before = fake.connects.load(Ordering::SeqCst);
    fake.drop_link();
    while fake.connects.load(Ordering::SeqCst) == before {
        assert!(tokio::time::Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn gatt_read_failure_reconnects() {
    let mac: Mac = "11:22:33:44:55:67".parse().unwrap();
    let fake = Arc::new(FakeGatt::default()); // no value for 0x2a19: every read fails
    let (tx, _rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_device(
        gatt_device(mac, false),
        fake.clone(),
        tx,
        stop.clone(),
        Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.connects.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected reconnects after failed reads"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.reads.load(Ordering::SeqCst) >= 2);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn watchdog_restarts_discovery_then_resets_adapter_on_silence() {
    let cfg = load(
        tempfile::tempdir().unwrap().path(),
        "gateway: { id: test }\nbuses: [{ name: ble, type: ble }]\ndevices: [{ name: hall, bus: ble, mac: \"A4:C1:38:8D:18:B2\" }]\n",
    );
    let (scanner, handle) = FakeScanner::new();
    let src = make_source(&cfg, ScannerSpec::Given(Box::new(scanner))).with_watchdog(
        edgebus::sources::ble::config::WatchdogConfig {
            enabled: true,
            silence: Duration::from_millis(150),
            reset_after: 1,
        },
    );
    let run = start(Box::new(src));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handle.stats.resets.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no adapter reset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarts = handle.stats.restarts.load(Ordering::SeqCst);
    assert!(restarts >= 1, "a discovery restart comes before the reset");
    run.shutdown.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn scan_lists_heard_devices_decoded() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("rec.txt");
    let opts = edgebus::sources::ble::ScanOptions {
        replay: Some(format!("{root}/config/ble-replay.txt").into()),
        duration: Duration::from_secs(10),
        record: Some(recorded.clone()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let n = edgebus::sources::ble::scan_and_print(opts, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(n, 5, "{text}");
    assert!(
        text.contains("A4:C1:38:CF:01:56  -58 dBm \"ATC_CF0156\" pvvx [pvvx] temperature=21.12 °C"),
        "{text}"
    );
    assert!(text.contains("ruuvi_v5 [RuuviTag RAWv2]"), "{text}");
    assert!(text.contains("bthome [BTHome v2]"), "{text}");
    assert!(
        text.contains("ibeacon [iBeacon] uuid=fda50693a4e24fb1afcfc6eb07647825"),
        "{text}"
    );
    // a repeated frame is not printed again; a changed one is
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("A4:C1:38:CF:01:56"))
            .count(),
        3,
        "{text}"
    );
}

#[test]
fn scan_options_take_adapter_and_keys_from_the_map() {
    let cfg = load(
        tempfile::tempdir().unwrap().path(),
        "gateway: { id: test }\nbuses: [{ name: ble, type: ble, adapter: hci1 }]\ndevices: [{ name: s, bus: ble, mac: \"54:48:E6:8F:80:A5\", bind_key: 231d39c1d7cc1ab1aee224cd096db932 }]\n",
    );
    let o = edgebus::sources::ble::ScanOptions::from_config(&cfg, Duration::from_secs(5));
    assert_eq!(o.adapter.as_deref(), Some("hci1"));
    assert_eq!(o.keys.len(), 1);
    assert_eq!(o.duration, Duration::from_secs(5));
}

/// The real BlueZ scanner on a machine without BlueZ (as on build machines): `start`
/// reports `Unavailable` promptly with a reason instead of hanging or panicking.
#[cfg(feature = "ble")]
#[tokio::test]
async fn bluez_scanner_reports_unavailable_without_bluez() {
    use edgebus::sources::ble::scanner::{ScanError, Scanner, bluez::BluezScanner};
    let mut s = BluezScanner::new(None);
    let r = tokio::time::timeout(Duration::from_secs(30), s.start())
        .await
        .expect("start returns");
    match r {
        Err(ScanError::Unavailable(why)) => {
            eprintln!("as expected here: {why}");
            assert!(!why.is_empty());
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(()) => eprintln!("this machine has BlueZ and an adapter: scanning started"),
    }
}

/// The source as the registry builds it, on this machine without BlueZ: it says so, keeps
/// retrying quietly and does not end (so nothing else is disturbed), and stops on shutdown.
#[tokio::test]
async fn registry_built_source_survives_missing_bluez() {
    let cfg = load(
        tempfile::tempdir().unwrap().path(),
        "gateway: { id: test }\nbuses: [{ name: ble, type: ble }]\ndevices: [{ name: x, bus: ble, mac: \"01:02:03:04:05:06\" }]\n",
    );
    let mut run = start(build_all(&cfg).unwrap().sources.remove(0).source);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!run.task.is_finished());
    assert!(matches!(
        run.rx.try_recv(),
        Ok(SourceEvent::Availability { online: false, .. })
    ));
    assert!(run.rx.try_recv().is_err());
    run.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), run.task)
        .await
        .unwrap()
        .unwrap();
}

/// `edgebus check` shows the BLE devices and their configured points.
#[test]
fn check_summary_lists_ble_devices() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cfg = Config::load(std::path::Path::new(&format!("{root}/config/ble.yaml"))).unwrap();
    let built = build_all(&cfg).unwrap();
    let text = edgebus::summary::summary(&cfg, &built);
    println!("{text}");
    for d in ["living-room", "freezer", "bathroom"] {
        assert!(text.contains(d), "{text}");
    }
    assert!(text.contains("battery_voltage"), "{text}");
}
