//! Home Assistant MQTT discovery against a real mosquitto and an in-process Modbus server:
//! every config is checked against HA's documented schema for its component (required keys,
//! known keys only, valid classes), its `state_topic` must be a topic that really receives
//! data, writable points must be wired to their `…/set` topic (a write through it reaches
//! the Modbus server), and removed devices must lose their entities.

mod modbus_support;
mod ops_support;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use modbus_support::{Sim, TcpSim};
use ops_support::{config, publish, start, wait_until};
use serde_json::Value;
use support::{Mosquitto, Recorder, free_port, have_mosquitto};

const BASE: &str = "plant/ha-gw.1";

fn map(data: &std::path::Path, url: &str, modbus_port: Option<u16>, with_gen: bool) -> String {
    let mut y = format!(
        "gateway: {{id: ha-gw.1, data_dir: {}}}\n\
         upstream: {{url: '{url}', topic_prefix: plant}}\n\
         homeassistant: {{enabled: true, prefix: homeassistant}}\n",
        data.display()
    );
    if let Some(port) = modbus_port {
        y.push_str(&format!(
            "buses:\n  - {{name: plc, type: modbus-tcp, host: 127.0.0.1, port: {port}}}\n"
        ));
    }
    if with_gen || modbus_port.is_some() {
        y.push_str("devices:\n");
    }
    if with_gen {
        y.push_str("  - {name: gen, type: synthetic, poll: 100ms}\n");
    }
    if modbus_port.is_some() {
        y.push_str(
            "  - name: boiler\n    bus: plc\n    unit: 1\n    poll: 100ms\n    points:\n\
             \x20     - {name: temp, register: input, address: 0, type: i16, scale: 0.1, unit: \"°C\"}\n\
             \x20     - {name: setpoint, register: holding, address: 10, type: u16, scale: 0.5, unit: \"°C\", writable: true}\n\
             \x20     - {name: pump, register: coil, address: 3, writable: true}\n\
             \x20     - {name: alarm, register: discrete_input, address: 4}\n\
             \x20     - {name: energy, register: input, address: 20, type: u32, unit: kWh}\n",
        );
    }
    y
}

/// Keys HA documents for each component (the subset an integration like ours may send).
fn allowed(component: &str) -> BTreeSet<&'static str> {
    let common = [
        "name",
        "unique_id",
        "state_topic",
        "availability",
        "availability_mode",
        "device",
        "origin",
        "value_template",
        "entity_category",
        "device_class",
        "icon",
        "qos",
    ];
    let own: &[&str] = match component {
        "sensor" => &["unit_of_measurement", "state_class", "expire_after"],
        "binary_sensor" => &["payload_on", "payload_off", "expire_after"],
        "number" => &[
            "command_topic",
            "command_template",
            "min",
            "max",
            "step",
            "mode",
            "unit_of_measurement",
        ],
        "switch" => &[
            "command_topic",
            "payload_on",
            "payload_off",
            "state_on",
            "state_off",
        ],
        other => panic!("unexpected component {other}"),
    };
    common.iter().chain(own).copied().collect()
}

fn required(component: &str) -> &'static [&'static str] {
    match component {
        "sensor" | "binary_sensor" => &["state_topic"],
        "number" | "switch" => &["command_topic"],
        _ => &[],
    }
}

/// Device classes HA documents for sensors and binary sensors (those we may emit).
const SENSOR_CLASSES: &[&str] = &[
    "temperature",
    "voltage",
    "current",
    "power",
    "apparent_power",
    "reactive_power",
    "energy",
    "frequency",
    "humidity",
    "battery",
    "moisture",
    "pressure",
    "illuminance",
    "carbon_dioxide",
    "pm25",
    "volume",
    "volume_flow_rate",
    "signal_strength",
    "duration",
    "data_size",
];

/// Units HA accepts for a device class (for the classes a numeric point may get).
fn units_for(class: &str) -> &'static [&'static str] {
    match class {
        "temperature" => &["°C", "°F", "K"],
        "voltage" => &["V", "mV", "kV"],
        "current" => &["A", "mA"],
        "power" => &["W", "kW", "MW"],
        "energy" => &["Wh", "kWh", "MWh"],
        "humidity" | "battery" | "moisture" => &["%"],
        "pressure" => &["Pa", "hPa", "kPa", "bar", "mbar", "psi"],
        _ => &[],
    }
}

fn empty(p: &str) -> bool {
    p.is_empty() || p == "(null)"
}

/// Discovery configs seen so far, by topic (last payload wins).
fn configs(rec: &Recorder) -> BTreeMap<String, String> {
    rec.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("homeassistant/") && t.ends_with("/config"))
        .map(|(t, p)| (t.clone(), p.clone()))
        .collect()
}

/// What HA would render from `template` for `payload` (the templates we emit).
fn render(template: Option<&str>, payload: &str) -> Option<String> {
    let Some(t) = template else {
        return Some(payload.to_string());
    };
    let v: Value = serde_json::from_str(payload).ok()?;
    match t {
        "{{ value_json.value }}" => Some(v.get("value")?.to_string()),
        "{{ value_json.outbox.depth }}" => Some(v["outbox"].get("depth")?.to_string()),
        "{{ 'true' if value_json.value else 'false' }}" => {
            Some(v.get("value")?.as_bool()?.to_string())
        }
        other => panic!("template the test does not know: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_matches_the_schema_and_the_data() {
    if !have_mosquitto() || !support::require_program("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let broker = Mosquitto::start(free_port());
    let rec = Recorder::start(broker.port, "#");
    let sim = Sim::default();
    sim.unit(1, |u| {
        u.input[0] = 215; // 21.5 °C
        u.input[21] = 1234; // energy (u32, low word)
        u.discrete[4] = true;
    });
    let server = TcpSim::start(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaml = map(&data, &broker.url(), Some(server.addr.port()), true);
    let mut gw = start(dir.path(), &yaml).await;

    // 2 gateway entities + 1 synthetic point + 5 Modbus points.
    wait_until(30, "8 discovery configs", || configs(&rec).len() == 8).await;
    let found = configs(&rec);
    let mut unique = HashSet::new();
    let mut gateway_ids = HashSet::new();
    let mut by_name: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut availability = BTreeSet::new();
    let topic_re =
        regex_lite::Regex::new(r"^homeassistant/(sensor|binary_sensor|number|switch)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")
            .unwrap();
    for (topic, payload) in &found {
        let caps = topic_re
            .captures(topic)
            .unwrap_or_else(|| panic!("bad topic {topic}"));
        let component = caps[1].to_string();
        assert_eq!(&caps[2], "ha-gw_1", "node_id is the sanitised gateway id");
        let v: Value = serde_json::from_str(payload).unwrap();
        let obj = v.as_object().unwrap();
        for k in obj.keys() {
            assert!(
                allowed(&component).contains(k.as_str()),
                "{topic}: unknown key {k}"
            );
        }
        for k in required(&component) {
            assert!(obj.contains_key(*k), "{topic}: missing required {k}");
        }
        assert!(
            unique.insert(v["unique_id"].as_str().unwrap().to_string()),
            "{topic}: unique_id repeats"
        );
        let dev = &v["device"];
        assert!(!dev["identifiers"].as_array().unwrap().is_empty());
        assert!(dev["name"].is_string());
        if dev.get("via_device").is_none() {
            gateway_ids.insert(dev["identifiers"][0].as_str().unwrap().to_string());
        }
        if let Some(dc) = v.get("device_class").and_then(Value::as_str) {
            match component.as_str() {
                "binary_sensor" => assert_eq!(dc, "connectivity"),
                _ => assert!(SENSOR_CLASSES.contains(&dc), "{topic}: device_class {dc}"),
            }
            if let Some(unit) = v.get("unit_of_measurement").and_then(Value::as_str) {
                assert!(
                    units_for(dc).contains(&unit),
                    "{topic}: {unit} is not a {dc} unit"
                );
            }
        }
        if let Some(av) = v.get("availability") {
            let list = av.as_array().unwrap();
            assert_eq!(list[0]["topic"], format!("{BASE}/status"));
            for a in list {
                let t = a["topic"].as_str().unwrap();
                assert!(
                    t == format!("{BASE}/status") || t.ends_with("/availability"),
                    "{t}"
                );
                availability.insert(t.to_string());
            }
        }
        by_name.insert(v["name"].as_str().unwrap().to_string(), (component, v));
    }
    assert_eq!(gateway_ids.len(), 1, "one gateway device");
    for (_, v) in by_name.values() {
        if let Some(via) = v["device"].get("via_device") {
            assert!(
                gateway_ids.contains(via.as_str().unwrap()),
                "via_device names the gateway"
            );
        }
    }

    // Components and classes follow the points.
    let kind = |n: &str| by_name[n].0.as_str();
    assert_eq!(kind("temp"), "sensor");
    assert_eq!(by_name["temp"].1["device_class"], "temperature");
    assert_eq!(by_name["temp"].1["unit_of_measurement"], "°C");
    assert_eq!(by_name["temp"].1["state_class"], "measurement");
    assert_eq!(by_name["energy"].1["device_class"], "energy");
    assert_eq!(by_name["energy"].1["state_class"], "total_increasing");
    assert_eq!(kind("setpoint"), "number");
    assert_eq!(by_name["setpoint"].1["min"], 0.0);
    assert_eq!(by_name["setpoint"].1["max"], 32767.5);
    assert_eq!(by_name["setpoint"].1["step"], 0.5);
    assert_eq!(kind("pump"), "switch");
    assert_eq!(kind("alarm"), "binary_sensor");
    assert_eq!(kind("counter"), "sensor");
    assert!(
        by_name["counter"].1.get("state_class").is_none(),
        "no unit, type unknown"
    );
    assert_eq!(kind("Status"), "binary_sensor");

    // Every availability topic says `online`, and every state topic receives data that its
    // template turns into a state.
    assert_eq!(
        availability.len(),
        3,
        "status, gen and boiler: {availability:?}"
    );
    wait_until(30, "every availability topic online", || {
        availability
            .iter()
            .all(|t| rec.payloads(t).last().map(String::as_str) == Some("online"))
    })
    .await;
    wait_until(30, "data on every state topic", || {
        by_name.values().all(|(_, v)| {
            let t = v["state_topic"].as_str().unwrap();
            !rec.payloads(t).is_empty()
        })
    })
    .await;
    for (name, (component, v)) in &by_name {
        let t = v["state_topic"].as_str().unwrap();
        let last = rec.payloads(t).last().cloned().unwrap();
        let state = render(v.get("value_template").and_then(Value::as_str), &last)
            .unwrap_or_else(|| panic!("{name}: template does not fit payload {last}"));
        match component.as_str() {
            "binary_sensor" | "switch" => {
                let on = v.get("state_on").or(v.get("payload_on")).unwrap();
                let off = v.get("state_off").or(v.get("payload_off")).unwrap();
                assert!(
                    state == on.as_str().unwrap() || state == off.as_str().unwrap(),
                    "{name}: state {state} is neither {on} nor {off}"
                );
            }
            _ => assert!(
                state.parse::<f64>().is_ok(),
                "{name}: state {state} is not a number"
            ),
        }
    }
    let temp = rec.payloads(&format!("{BASE}/boiler/temp"));
    let temp: f64 = render(Some("{{ value_json.value }}"), temp.last().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!((temp - 21.5).abs() < 1e-9, "temp {temp}");

    // Writable points are wired to their set topics: writes reach the Modbus server.
    for name in ["setpoint", "pump"] {
        let v = &by_name[name].1;
        assert_eq!(
            v["command_topic"].as_str().unwrap(),
            format!("{}/set", v["state_topic"].as_str().unwrap())
        );
    }
    publish(
        broker.port,
        by_name["setpoint"].1["command_topic"].as_str().unwrap(),
        "22.5",
    );
    publish(
        broker.port,
        by_name["pump"].1["command_topic"].as_str().unwrap(),
        "true",
    );
    wait_until(30, "writes applied", || {
        sim.unit(1, |u| u.holding[10] == 45 && u.coils[3])
    })
    .await;

    // The boiler leaves the map: its five entities are removed (empty retained configs).
    let boiler_topics: Vec<String> = found
        .keys()
        .filter(|t| t.contains("/boiler_"))
        .cloned()
        .collect();
    assert_eq!(boiler_topics.len(), 5);
    gw.reload(config(dir.path(), &map(&data, &broker.url(), None, true)))
        .await
        .unwrap();
    wait_until(30, "boiler entities removed", || {
        boiler_topics
            .iter()
            .all(|t| rec.payloads(t).last().is_some_and(|p| empty(p)))
    })
    .await;
    let record: BTreeSet<String> =
        serde_json::from_slice(&std::fs::read(data.join("homeassistant.json")).unwrap()).unwrap();
    assert_eq!(record.len(), 3, "{record:?}");
    gw.shutdown().await.unwrap();

    // Across a restart too: `gen` is gone when the gateway comes back.
    let gen_topic = found
        .keys()
        .find(|t| t.contains("/gen_counter/"))
        .unwrap()
        .clone();
    let gw = start(dir.path(), &map(&data, &broker.url(), None, false)).await;
    wait_until(30, "gen entity removed after restart", || {
        rec.payloads(&gen_topic).last().is_some_and(|p| empty(p))
    })
    .await;
    // The gateway's own entities stay.
    let status_topic = found
        .keys()
        .find(|t| t.ends_with("/status/config"))
        .unwrap();
    assert!(!empty(rec.payloads(status_topic).last().unwrap()));
    gw.shutdown().await.unwrap();
    server.stop().await;
}
