//! Streaming sensors on real pseudo-terminals: each protocol with noise mixed in, checked
//! value by value, and the garbage counted by reason.

mod emulation;
mod serial_support;

use edgebus::reading::Value;
use edgebus::sources::serial::engine::SerialStats;
use serial_support::{Pty, Running, source_from_yaml, values, yaml};

fn nmea(body: &str) -> String {
    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{cs:02X}\r\n")
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Float(f) => *f,
        other => panic!("not a float: {other:?}"),
    }
}

fn get(s: &portable_atomic::AtomicU64) -> u64 {
    SerialStats::get(s)
}

#[tokio::test]
async fn gps_receiver_nmea_with_noise() {
    if !emulation::serial_usable("gps_receiver_nmea_with_noise") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new(&dir.path().join("usb-u-blox_GNSS_receiver-if00"));
    let src = source_from_yaml(&yaml(
        &pty.link,
        "    baud: 9600\n    max_line: 200\n",
        r#"  - name: gps
    bus: line
    parser: { type: nmea }
    points:
      - { name: lat, field: GGA.latitude, unit: "°" }
      - { name: lon, field: GGA.longitude, unit: "°" }
      - { name: alt, field: altitude, unit: m }
      - { name: fix, field: fix_quality }
      - { name: sats, field: satellites }
      - { name: hdop, field: GGA.hdop }
      - { name: speed, field: RMC.speed_kmh, unit: km/h }
      - { name: course, field: RMC.course }
      - { name: when, field: datetime }
      - { name: valid, field: RMC.valid }
"#,
    ));
    let mut run = Running::start(src);
    let rmc = nmea("GPRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A");
    let gga = nmea("GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,");
    let mut bad_cs = nmea("GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,");
    bad_cs.replace_range(bad_cs.len() - 4..bad_cs.len() - 2, "00");
    let mut stream: Vec<u8> = Vec::new();
    stream.extend(b"\xff\xfe\x00\x01junk\r\n");
    stream.extend(rmc.as_bytes());
    stream.extend(nmea("GPVTG,77.52,T,,M,0.004,N,0.008,K,A").as_bytes());
    stream.extend(bad_cs.as_bytes());
    stream.extend(b"$GPGGA,0927\r\n");
    stream.extend(gga.as_bytes());
    stream.extend(vec![b'A'; 300]);
    stream.extend(b"\r\n");
    stream.extend(nmea("GPGSA,A,3,10,07,05,02,29,04,08,13,,,,,1.72,1.03,1.38").as_bytes());
    stream.extend(
        nmea("GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30").as_bytes(),
    );
    stream.extend(b"hello world\r\n");
    stream.extend(nmea("GPGLL,4717.11364,N,00833.91565,E,092321.00,A,A").as_bytes());
    // Split in awkward places, as a UART delivers it.
    for chunk in stream.chunks(7) {
        pty.write(chunk);
    }
    let (r, avail) = run.readings(10, 10).await;
    assert_eq!(avail, vec![("gps".to_string(), true)]);
    let v = values(&r);
    let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "speed", "course", "when", "valid", "lat", "lon", "alt", "fix", "sats", "hdop"
        ]
    );
    assert!((float(&v[0].1) - 0.004 * 1.852).abs() < 1e-12);
    assert_eq!(v[1].1, Value::Float(77.52));
    assert_eq!(v[2].1, Value::Text("2002-12-09T08:35:59.00Z".into()));
    assert_eq!(v[3].1, Value::Bool(true));
    assert!((float(&v[4].1) - (47.0 + 17.11399 / 60.0)).abs() < 1e-12);
    assert!((float(&v[5].1) - (8.0 + 33.91590 / 60.0)).abs() < 1e-12);
    assert_eq!(v[6].1, Value::Float(499.6));
    assert_eq!(v[7].1, Value::UInt(1));
    assert_eq!(v[8].1, Value::UInt(8));
    assert_eq!(v[9].1, Value::Float(1.01));
    assert_eq!(r[4].unit.as_deref(), Some("°"));
    assert!(r.iter().all(|x| &*x.device == "gps"));

    // Everything was read: a marker line after the stream proves no line is pending.
    pty.write(gga.as_bytes());
    let (r, _) = run.readings(6, 10).await;
    assert_eq!(r[0].point.as_ref(), "lat");
    let s = run.stats.clone();
    assert_eq!(get(&s.invalid_utf8), 1);
    assert_eq!(get(&s.checksum), 1);
    assert_eq!(get(&s.overlong), 1);
    assert_eq!(get(&s.malformed), 2, "truncated sentence and `hello world`");
    assert_eq!(
        get(&s.ignored),
        4,
        "VTG, GSA, GSV, GLL carry none of the points"
    );
    assert_eq!(get(&s.lines), 3);
    run.stop().await;
}

#[tokio::test]
async fn weather_station_csv_crlf() {
    if !emulation::serial_usable("weather_station_csv_crlf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new(&dir.path().join("usb-FTDI_FT232R_weather-if00-port0"));
    let src = source_from_yaml(&yaml(
        &pty.link,
        "    baud: 19200\n    delimiter: \"\\r\\n\"\n",
        r#"  - name: weather
    bus: line
    parser: { type: csv, separator: ";", columns: [ts, temperature, humidity, pressure, wind_dir, status] }
    points:
      - { name: temperature, field: temperature, unit: "°C" }
      - { name: humidity, field: humidity, unit: "%" }
      - { name: pressure, field: pressure, unit: Pa, scale: 100 }
      - { name: wind_dir, field: wind_dir, type: int, unit: "°" }
      - { name: status, field: status, type: text }
"#,
    ));
    let mut run = Running::start(src);
    pty.write(b"2026-11-22T10:00:00Z;21.5;40.1;1013.25;270;OK\r\n");
    pty.write(b"2026-11-22T10:00:05Z;21.");
    pty.write(b"\r\n"); // cut-off line: wrong column count
    pty.write(b"2026-11-22T10:00:10Z;nan;40.3;1013.20;265;\"SENSOR;WARN\"\r\n");
    pty.write(b"\x00\x00\r\n"); // NULs only: nothing
    pty.write(b"2026-11-22T10:00:15Z;-3.25;99;987.5;0;OK\r\n");
    let (r, _) = run.readings(13, 10).await;
    assert_eq!(
        values(&r),
        vec![
            ("temperature".into(), Value::Float(21.5)),
            ("humidity".into(), Value::Float(40.1)),
            ("pressure".into(), Value::Float(1013.25 * 100.0)),
            ("wind_dir".into(), Value::Int(270)),
            ("status".into(), Value::Text("OK".into())),
            // `nan` temperature skipped (counted), the rest of the line kept.
            ("humidity".into(), Value::Float(40.3)),
            ("pressure".into(), Value::Float(1013.20 * 100.0)),
            ("wind_dir".into(), Value::Int(265)),
            ("status".into(), Value::Text("SENSOR;WARN".into())),
            ("temperature".into(), Value::Float(-3.25)),
            ("humidity".into(), Value::Float(99.0)),
            ("pressure".into(), Value::Float(987.5 * 100.0)),
            ("wind_dir".into(), Value::Int(0)),
        ]
    );
    assert_eq!(r[2].unit.as_deref(), Some("Pa"));
    let s = run.stats.clone();
    assert_eq!(get(&s.malformed), 1);
    assert_eq!(get(&s.conversion), 1);
    run.stop().await;
}

#[tokio::test]
async fn json_lines_by_pointer() {
    if !emulation::serial_usable("json_lines_by_pointer") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new(&dir.path().join("usb-Espressif_ESP32-if00"));
    let src = source_from_yaml(&yaml(
        &pty.link,
        "    baud: 115200\n",
        r#"  - name: esp32
    bus: line
    parser: { type: json }
    points:
      - { name: temperature, field: /bme280/t, unit: "°C" }
      - { name: pressure, field: /bme280/p, unit: hPa }
      - { name: uptime, field: uptime, type: uint, unit: s }
      - { name: relay, field: /io/relay }
"#,
    ));
    let mut run = Running::start(src);
    pty.write(b"boot: rst:0x1 (POWERON_RESET)\n");
    pty.write(b"{\"bme280\":{\"t\":22.75,\"p\":1009.5},\"uptime\":12,\"io\":{\"relay\":true}}\n");
    pty.write(b"{\"bme280\":{\"t\":22.8,\"p\"\n"); // truncated
    pty.write(b"{\"bme280\":{\"t\":-0.5},\"uptime\":4294967296,\"io\":{\"relay\":false}}\n");
    let (r, _) = run.readings(7, 10).await;
    assert_eq!(
        values(&r),
        vec![
            ("temperature".into(), Value::Float(22.75)),
            ("pressure".into(), Value::Float(1009.5)),
            ("uptime".into(), Value::UInt(12)),
            ("relay".into(), Value::Bool(true)),
            ("temperature".into(), Value::Float(-0.5)),
            ("uptime".into(), Value::UInt(4_294_967_296)),
            ("relay".into(), Value::Bool(false)),
        ]
    );
    assert_eq!(
        get(&run.stats.malformed),
        2,
        "boot banner and truncated document"
    );
    run.stop().await;
}

#[tokio::test]
async fn arduino_key_value_and_regex_devices_share_a_line() {
    if !emulation::serial_usable("arduino_key_value_and_regex_devices_share_a_line") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new(&dir.path().join("usb-Arduino__www.arduino.cc__0043-if00"));
    let src = source_from_yaml(&yaml(
        &pty.link,
        "",
        r#"  - name: greenhouse
    bus: line
    match: "^T="
    parser: { type: kv }
    points:
      - { name: temperature, field: T, unit: "°C" }
      - { name: humidity, field: H, unit: "%" }
      - { name: soil, field: soil, type: uint, scale: 0.09765625, unit: "%" }
  - name: dust
    bus: line
    match: "^PM"
    parser: { type: regex, pattern: 'PM2\.5:\s*(?P<pm25>\d+)\s*ug/m3\s+PM10:\s*(?P<pm10>\d+)' }
    points:
      - { name: pm25, field: pm25, type: uint, unit: "µg/m³" }
      - { name: pm10, field: pm10, type: uint, unit: "µg/m³" }
"#,
    ));
    let mut run = Running::start(src);
    pty.write(b"Greenhouse v1.2 ready\r\n");
    pty.write(b"T=24.0 H=61 soil=512\r\n");
    pty.write(b"PM2.5: 12 ug/m3 PM10: 20 ug/m3\r\n");
    pty.write(b"T=24.1,H=nan,soil=1024\r\n");
    pty.write(b"PM2.5: 13 ug/m3 PM10: x\r\n");
    pty.write(b"T=24.2 H=60 soil=0\r\n");
    let (r, avail) = run.readings(9, 10).await;
    let by: Vec<(String, String, Value)> = r
        .iter()
        .map(|x| (x.device.to_string(), x.point.to_string(), x.value.clone()))
        .collect();
    let e = |d: &str, p: &str, v: Value| (d.to_string(), p.to_string(), v);
    assert_eq!(
        by,
        vec![
            e("greenhouse", "temperature", Value::Float(24.0)),
            e("greenhouse", "humidity", Value::Float(61.0)),
            e("greenhouse", "soil", Value::UInt(50)),
            e("dust", "pm25", Value::UInt(12)),
            e("dust", "pm10", Value::UInt(20)),
            e("greenhouse", "temperature", Value::Float(24.1)),
            e("greenhouse", "soil", Value::UInt(100)),
            e("greenhouse", "temperature", Value::Float(24.2)),
            e("greenhouse", "humidity", Value::Float(60.0)),
        ]
    );
    assert_eq!(
        avail,
        vec![("greenhouse".to_string(), true), ("dust".to_string(), true)]
    );
    let s = run.stats.clone();
    assert_eq!(get(&s.no_match), 1, "PM line without a PM10 number");
    assert_eq!(get(&s.conversion), 1, "H=nan");
    assert_eq!(get(&s.ignored), 1, "banner matches no device");
    run.stop().await;
}

#[tokio::test]
async fn custom_delimiter_byte() {
    if !emulation::serial_usable("custom_delimiter_byte") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new(&dir.path().join("usb-scale-if00"));
    let src = source_from_yaml(&yaml(
        &pty.link,
        "    delimiter: 0x03\n    max_line: 32\n",
        r#"  - name: scale
    bus: line
    parser: { type: regex, pattern: '^\x02?(?P<sign>[+-])?\s*(?P<kg>\d+\.\d+)\s*kg' }
    points:
      - { name: weight, field: kg, unit: kg }
"#,
    ));
    let mut run = Running::start(src);
    pty.write(b"\x02+  12.345 kg\x03\x02+  12.");
    pty.write(b"350 kg\x03\n\n\x02 0.000 kg\x03");
    pty.write(&[b'9'; 100]);
    pty.write(b"\x03\x02+  1.500 kg\x03");
    let (r, _) = run.readings(4, 10).await;
    assert_eq!(
        values(&r),
        vec![
            ("weight".into(), Value::Float(12.345)),
            ("weight".into(), Value::Float(12.35)),
            ("weight".into(), Value::Float(0.0)),
            ("weight".into(), Value::Float(1.5)),
        ]
    );
    assert_eq!(get(&run.stats.overlong), 1);
    run.stop().await;
}
