//! `edgebus check`: every example in config/ passes, broken files point at the right line and
//! column, and secrets never reach the output.

mod bin_support;

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn edgebus() -> Command {
    Command::new(bin_support::BIN)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp config");
    p
}

#[test]
fn every_example_config_passes_check() {
    if !bin_support::runnable("every_example_config_passes_check") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        edgebus()
            .args(["check", "-c"])
            .arg(&path)
            .env("MQTT_PASSWORD", "example")
            .assert()
            .success()
            .stdout(predicate::str::contains(": ok"));
    }
    assert!(n >= 1, "no example configs found in {}", dir.display());
}

#[test]
fn syntax_error_reports_line_and_column() {
    if !bin_support::runnable("syntax_error_reports_line_and_column") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "bad.yaml",
        "gateway:\n  id: demo\n  tags: [a, b\nupstream:\n  url: x\n",
    );
    edgebus()
        .args(["check", "-c"])
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.yaml:4:"));
}

#[test]
fn semantic_errors_point_at_the_node() {
    if !bin_support::runnable("semantic_errors_point_at_the_node") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "bad.yaml",
        "\
gateway:
  id: demo
  colour: red
devices:
  - name: pi
    type: host
    poll: 5 parsecs
  - name: meter
    bus: rs485
  - name: pi2
    type: host
    points:
      - { name: load_1m }
      - { name: load_1m, deadband: 0.1 }
",
    );
    let out = edgebus().args(["check", "-c"]).arg(&f).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("bad.yaml:3:3: unknown field `colour`"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:7:11: invalid duration `5 parsecs`"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:9:10: device `meter` names bus `rs485`, which is not defined"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:14:17: duplicate point `load_1m`"),
        "{err}"
    );
    let f = write(
        t.path(),
        "bad2.yaml",
        "gateway: { id: demo }\ndevices:\n  - name: pi\n    type: host\n    points:\n      - { name: fan_speed }\n",
    );
    let out = edgebus().args(["check", "-c"]).arg(&f).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("bad2.yaml:6:17: unknown host metric `fan_speed`"),
        "{err}"
    );
}

#[test]
fn duplicate_devices_and_topic_collisions() {
    if !bin_support::runnable("duplicate_devices_and_topic_collisions") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "dup.yaml",
        "\
gateway: { id: gw }
devices:
  - { name: a, type: host, points: [ { name: load_1m } ] }
  - { name: a, type: host, points: [ { name: load_5m } ] }
  - name: b
    type: host
    points:
      - { name: load_1m, topic: 'x/{device}' }
      - { name: load_5m, topic: 'x/{device}' }
",
    );
    let out = edgebus().args(["check", "-c"]).arg(&f).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("dup.yaml:4:13: duplicate device name `a`"),
        "{err}"
    );
    assert!(
        err.contains("the same topic as point `load_1m` of device `b`"),
        "{err}"
    );
}

#[test]
fn secrets_are_substituted_and_never_printed() {
    if !bin_support::runnable("secrets_are_substituted_and_never_printed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pw = write(t.path(), "pw", "hunter2-from-file\n");
    let f = write(
        t.path(),
        "ok.yaml",
        &format!(
            "gateway: {{ id: gw }}\nupstream:\n  url: mqtt://broker:1883\n  username: ${{MQTT_USER}}\n  password_file: {}\ndevices:\n  - {{ name: pi, type: host }}\n",
            pw.display()
        ),
    );
    edgebus()
        .args(["check", "-c"])
        .arg(&f)
        .env("MQTT_USER", "gw7")
        .assert()
        .success()
        .stdout(predicate::str::contains("hunter2").not());
    edgebus()
        .args(["check", "-c"])
        .arg(&f)
        .env_remove("MQTT_USER")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ok.yaml:4:13: environment variable `MQTT_USER` is not set",
        ));
}

#[test]
fn missing_file_is_a_clear_error() {
    if !bin_support::runnable("missing_file_is_a_clear_error") {
        return;
    }
    edgebus()
        .args(["check", "-c", "/nonexistent/edgebus.yaml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "/nonexistent/edgebus.yaml: cannot read",
        ));
}
