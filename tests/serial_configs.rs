//! The serial example device maps load with the core's loader and build their sources.

use std::path::Path;

use edgebus::config::Config;

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    // Secrets come from the environment; give them a value so the check is about the map.
    match Config::from_text(&path, &text, &|_| Some("secret".into())) {
        Ok(c) => c,
        Err(e) => panic!("{name}:\n{e}"),
    }
}

fn points(c: &Config) -> Vec<String> {
    let built = match edgebus::sources::build_all(c) {
        Ok(b) => b,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(built.sources.len(), 1);
    assert_eq!(built.sources[0].source.name(), c.buses[0].name);
    built
        .catalog
        .iter()
        .map(|e| format!("{}/{}", e.device, e.point.name))
        .collect()
}

#[test]
fn gps_example() {
    let c = load("serial-gps.yaml");
    assert!(
        c.buses[0].rest["port"]
            .as_str()
            .unwrap()
            .starts_with("/dev/serial/by-id/")
    );
    assert_eq!(points(&c).len(), 9);
}

#[test]
fn weather_csv_example() {
    let c = load("serial-weather-csv.yaml");
    assert!(
        c.buses[0].rest["port"]
            .as_str()
            .unwrap()
            .starts_with("/dev/serial/by-id/")
    );
    assert_eq!(
        points(&c),
        [
            "weather/temperature",
            "weather/humidity",
            "weather/pressure",
            "weather/wind_speed",
            "weather/wind_direction"
        ]
    );
}

#[test]
fn arduino_example() {
    let c = load("serial-arduino.yaml");
    assert!(
        c.buses[0].rest["port"]
            .as_str()
            .unwrap()
            .starts_with("/dev/serial/by-id/")
    );
    assert_eq!(
        points(&c),
        [
            "greenhouse/temperature",
            "greenhouse/humidity",
            "greenhouse/soil_moisture",
            "greenhouse/pump",
            "dust/pm2_5",
            "dust/pm10"
        ]
    );
}

#[test]
fn mistakes_are_reported_with_line_and_column() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/serial-gps.yaml"),
    )
    .unwrap()
    .replace("field: GGA.hdop", "field: GGA.hdopp")
    .replace("baud: 9600", "baud: 9600\n    parity: mark");
    let err = Config::from_text(Path::new("gps.yaml"), &text, &|_| Some("x".into()))
        .unwrap_err()
        .to_string();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let parity = format!("gps.yaml:{}:", line_of("parity: mark"));
    let field = format!("gps.yaml:{}:", line_of("GGA.hdopp"));
    assert!(
        lines[0].starts_with(&parity) && lines[0].contains("mark"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&field) && lines[1].contains("unknown NMEA field `GGA.hdopp`"),
        "{err}"
    );
}

#[test]
fn nmea_points_get_their_natural_units() {
    let text = r#"
gateway: { id: t }
buses: [{ name: g, type: serial, port: /dev/serial/by-id/usb-gps }]
devices:
  - name: gps
    bus: g
    parser: nmea
    points:
      - { name: lat, field: latitude }
      - { name: alt, field: altitude }
      - { name: alt_ft, field: altitude, scale: 3.28084 }
      - { name: speed, field: speed_kmh }
      - { name: sats, field: satellites }
      - { name: course, field: course, unit: deg }
"#;
    let c =
        Config::from_text(Path::new("t.yaml"), text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let built = edgebus::sources::build_all(&c).unwrap_or_else(|e| panic!("{e:?}"));
    let units: Vec<Option<&str>> = built
        .catalog
        .iter()
        .map(|e| e.point.unit.as_deref())
        .collect();
    assert_eq!(
        units,
        [Some("°"), Some("m"), None, Some("km/h"), None, Some("deg")]
    );
}
