//! Unplug and re-plug: the pty behind the by-id link disappears and comes back at the same
//! path; the source reports the device offline, reopens with backoff, and reads again.

mod emulation;
mod serial_support;

use std::time::Duration;

use edgebus::reading::{Reading, Value};
use edgebus::sources::SourceEvent;
use edgebus::sources::serial::engine::SerialStats;
use serial_support::{Pty, Running, source_from_yaml, values, yaml};

const DEVICE: &str = r#"  - name: probe
    bus: line
    parser: { type: kv }
    points:
      - { name: t, field: t }
"#;

/// Writes `line` every 50 ms until a reading arrives (the source may still be reopening).
async fn feed_until_reading(
    run: &mut Running,
    pty: &mut Pty,
    line: &[u8],
) -> (Vec<Reading>, Vec<(String, bool)>) {
    let (mut r, mut a) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        pty.write(line);
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(50), run.events.recv()).await
        {
            match ev {
                SourceEvent::Reading(x) => r.push(x),
                SourceEvent::Availability { device, online } => {
                    a.push((device.to_string(), online))
                }
                other => panic!("unexpected {other:?}"),
            }
            if !r.is_empty() {
                return (r, a);
            }
        }
    }
    panic!("no reading after re-plug; stats: {:?}", run.stats);
}

#[tokio::test]
async fn unplug_and_replug_recovers() {
    if !emulation::serial_usable("unplug_and_replug_recovers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-Silicon_Labs_CP2102-if00-port0");
    let mut pty = Pty::new(&link);
    let mut run = Running::start(source_from_yaml(&yaml(&link, "", DEVICE)));
    pty.write(b"t=1\n");
    let (r, a) = run.readings(1, 10).await;
    assert_eq!(values(&r), vec![("t".into(), Value::Float(1.0))]);
    assert_eq!(a, vec![("probe".to_string(), true)]);

    // Unplug mid-line: the half line must not be glued to what comes after re-plug.
    pty.write(b"t=99");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(pty);
    assert!(!run.availability("probe", 10).await, "offline after unplug");
    // Stay unplugged over several reopen attempts (backoff 50 ms .. 200 ms); each counts.
    for _ in 0..200 {
        if SerialStats::get(&run.stats.port_errors) >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        SerialStats::get(&run.stats.port_errors) >= 4,
        "reopen attempts are made and counted"
    );
    assert_eq!(
        SerialStats::get(&run.stats.opens),
        1,
        "and they fail while unplugged"
    );

    let mut pty = Pty::new(&link);
    let (r, a) = feed_until_reading(&mut run, &mut pty, b"t=2\n").await;
    assert_eq!(values(&r), vec![("t".into(), Value::Float(2.0))]);
    assert_eq!(a, vec![("probe".to_string(), true)]);
    assert_eq!(SerialStats::get(&run.stats.opens), 2);
    assert_eq!(
        SerialStats::get(&run.stats.partial),
        1,
        "the cut line was counted, not parsed"
    );

    // And again, to show recovery is not a one-off.
    drop(pty);
    assert!(!run.availability("probe", 10).await);
    let mut pty = Pty::new(&link);
    let (r, _) = feed_until_reading(&mut run, &mut pty, b"t=3\n").await;
    assert_eq!(values(&r), vec![("t".into(), Value::Float(3.0))]);
    run.stop().await;
}

#[tokio::test]
async fn missing_port_at_start_is_offline_then_recovers() {
    if !emulation::serial_usable("missing_port_at_start_is_offline_then_recovers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-not-yet-plugged");
    let mut run = Running::start(source_from_yaml(&yaml(&link, "", DEVICE)));
    assert!(
        !run.availability("probe", 10).await,
        "announced offline while the port is missing"
    );
    let mut pty = Pty::new(&link);
    let (r, a) = feed_until_reading(&mut run, &mut pty, b"t=5\n").await;
    assert_eq!(values(&r), vec![("t".into(), Value::Float(5.0))]);
    assert_eq!(a, vec![("probe".to_string(), true)]);
    run.stop().await;
}

#[tokio::test]
async fn idle_line_goes_offline_and_back() {
    if !emulation::serial_usable("idle_line_goes_offline_and_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-gps-idle");
    let mut pty = Pty::new(&link);
    let mut run = Running::start(source_from_yaml(&yaml(
        &link,
        "    idle_timeout: 300ms\n",
        DEVICE,
    )));
    pty.write(b"t=1\nt=");
    let (_, a) = run.readings(1, 10).await;
    assert_eq!(a, vec![("probe".to_string(), true)]);
    assert!(!run.availability("probe", 10).await, "silent line: offline");
    assert_eq!(
        SerialStats::get(&run.stats.partial),
        1,
        "the half line was dropped"
    );
    pty.write(b"7\nt=8\n");
    let (r, a) = run.readings(1, 10).await;
    assert_eq!(
        values(&r),
        vec![("t".into(), Value::Float(8.0))],
        "`7` alone is not a line of ours"
    );
    assert_eq!(a, vec![("probe".to_string(), true)]);
    assert_eq!(
        SerialStats::get(&run.stats.opens),
        1,
        "idle does not reopen the port"
    );
    run.stop().await;
}
