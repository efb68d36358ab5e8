//! The same paths through `socat` (Debian package), an independent pty bridge: a GPS stream
//! with noise, then socat is stopped (unplug: links gone, ptys closed) and restarted at the
//! same paths (re-plug), and the source reads again.

mod emulation;
mod serial_support;

use std::io::Write;
use std::time::Duration;

use edgebus::reading::Value;
use edgebus::sources::SourceEvent;
use serial_support::{Running, Socat, have_peer, source_from_yaml, yaml};

fn nmea(body: &str) -> String {
    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{cs:02X}\r\n")
}

fn gga(alt: f64) -> String {
    nmea(&format!(
        "GNGGA,101010.00,5230.12345,N,01323.54321,E,2,12,0.8,{alt:.1},M,39.9,M,,"
    ))
}

/// Writes `line` until the source reports a reading (it may still be reopening the port).
async fn altitude_after(
    run: &mut Running,
    sensor: &mut std::fs::File,
    line: &str,
) -> (f64, Vec<bool>) {
    let mut avail = Vec::new();
    for _ in 0..200 {
        sensor.write_all(line.as_bytes()).expect("write to socat");
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(50), run.events.recv()).await
        {
            match ev {
                SourceEvent::Reading(r) if &*r.point == "alt" => match r.value {
                    Value::Float(a) => return (a, avail),
                    other => panic!("altitude {other:?}"),
                },
                SourceEvent::Availability { online, .. } => avail.push(online),
                _ => {}
            }
        }
    }
    panic!("no reading through socat; stats: {:?}", run.stats);
}

#[tokio::test]
async fn socat_bridge_stream_unplug_replug() {
    if !emulation::serial_usable("socat_bridge_stream_unplug_replug") {
        return;
    }
    if !have_peer("socat", "socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let device = dir
        .path()
        .join("usb-Prolific_Technology_Inc._USB-Serial_Controller-if00-port0");
    let sensor_path = dir.path().join("gps-side");
    let socat = Socat::start(&device, &sensor_path);
    let mut sensor = socat.sensor();
    let mut run = Running::start(source_from_yaml(&yaml(
        &device,
        "    baud: 4800\n",
        r#"  - name: gps
    bus: line
    parser: { type: nmea }
    points:
      - { name: lat, field: latitude }
      - { name: alt, field: altitude, unit: m }
"#,
    )));
    sensor
        .write_all(b"\x00\xff garbage \x07\r\n$GNGGA,1*00\r\n")
        .unwrap();
    let (alt, avail) = altitude_after(&mut run, &mut sensor, &gga(34.5)).await;
    assert_eq!(alt, 34.5);
    assert_eq!(avail, vec![true]);

    drop(sensor);
    drop(socat);
    assert!(
        !run.availability("gps", 10).await,
        "offline once socat is gone"
    );

    let socat = Socat::start(&device, &sensor_path);
    let mut sensor = socat.sensor();
    let (alt, avail) = altitude_after(&mut run, &mut sensor, &gga(35.0)).await;
    assert_eq!(alt, 35.0);
    assert_eq!(avail, vec![true]);
    assert!(
        run.stats.garbage() >= 2,
        "noise was counted: {:?}",
        run.stats
    );
    run.stop().await;
    drop(socat);
}
