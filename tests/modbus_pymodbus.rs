//! Against pymodbus (an independent implementation) as the server, over Modbus TCP, RTU
//! framing over TCP, and RTU through a socat pseudo-terminal pair: exact decoding of pymodbus-encoded values,
//! request counts equal to the plan, the illegal-address fallback on a real gapped map, a
//! missing slave going offline, and writes landing with the right function code and words.

mod emulation;
mod modbus_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgebus::reading::Value;
use modbus_support::*;

struct Peer {
    children: Vec<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Peer {
    fn requests(&self, unit: u8) -> Vec<Vec<u32>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("REQ "))
            .map(|l| {
                l.split(' ')
                    .filter_map(|x| x.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .filter(|v| v.first() == Some(&u32::from(unit)))
            .collect()
    }
}

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn script() -> String {
    format!("{}/tests/modbus_peer.py", env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Tcp,
    RtuOverTcp,
    Rtu,
}

/// Starts the pymodbus peer; `None` when pymodbus (or socat for RTU) is missing.
async fn start(link: Link) -> Option<(Peer, String)> {
    let rtu = link == Link::Rtu;
    if !have("python3", &["-c", "import pymodbus"]) {
        peer_missing("python3 with pymodbus (pip install pymodbus)");
        return None;
    }
    if rtu && !have("socat", &["-V"]) {
        peer_missing("socat (apt-get install socat)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let (args, bus) = if rtu {
        let (a, b) = (dir.path().join("peer"), dir.path().join("gw"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(socat);
        wait_for(10, "socat ptys", || a.exists() && b.exists()).await;
        (
            vec!["rtu".to_string(), a.display().to_string(), "19200".into()],
            format!("type: modbus-rtu, port: \"{}\", baud: 19200", b.display()),
        )
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (
            vec!["tcp".to_string(), port.to_string()],
            format!("type: modbus-tcp, host: 127.0.0.1, port: {port}"),
        )
    };
    let mut child = Command::new("python3")
        .arg(script())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    children.push(child);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let peer = Peer {
        children,
        lines,
        _dir: dir,
    };
    wait_for(20, "pymodbus ready", || {
        peer.lines.lock().unwrap().iter().any(|l| l == "READY")
    })
    .await;
    Some((peer, bus))
}

fn yaml(bus: &str) -> String {
    format!(
        "gateway: {{ id: gw, data_dir: /tmp }}
buses:
  - {{ name: peer, {bus}, timeout: 1s, retries: 1, backoff_max: 2s }}
devices:
  - name: all
    bus: peer
    unit: 1
    poll: 150ms
    points:
      - {{ name: i16, register: holding, address: 0, type: i16 }}
      - {{ name: u16, register: holding, address: 1, type: u16 }}
      - {{ name: i32, register: holding, address: 2, type: i32 }}
      - {{ name: u32, register: holding, address: 4, type: u32 }}
      - {{ name: i64, register: holding, address: 6, type: i64 }}
      - {{ name: u64, register: holding, address: 10, type: u64 }}
      - {{ name: f32, register: holding, address: 14, type: f32 }}
      - {{ name: f64, register: holding, address: 16, type: f64 }}
      - {{ name: text, register: holding, address: 20, type: string, length: 4 }}
      - {{ name: level, register: holding, address: 24, type: u16, writable: true }}
      - {{ name: setpoint, register: holding, address: 26, type: f32, writable: true }}
      - {{ name: c0, register: coil, address: 0 }}
      - {{ name: c1, register: coil, address: 1 }}
      - {{ name: relay, register: coil, address: 4, writable: true }}
      - {{ name: d1, register: discrete_input, address: 1 }}
  - name: meter
    bus: peer
    unit: 2
    poll: 150ms
    points:
      - {{ name: voltage, register: input, address: 0, type: f32, unit: V }}
      - {{ name: current, register: input, address: 6, type: f32, unit: A }}
      - {{ name: power, register: input, address: 12, type: f32, unit: W }}
  - name: absent
    bus: peer
    unit: 3
    poll: 150ms
    points:
      - {{ name: v, register: holding, address: 0 }}
"
    )
}

async fn scenario(link: Link) {
    let Some((peer, bus)) = start(link).await else {
        return;
    };
    let h = run_yaml(&yaml(&bus));
    assert_eq!(h.planned, vec![3, 1, 1]);
    let expect: Vec<(&str, &str, Value)> = vec![
        ("all", "i16", Value::Int(-12345)),
        ("all", "u16", Value::UInt(54321)),
        ("all", "i32", Value::Int(-123_456_789)),
        ("all", "u32", Value::UInt(3_000_000_000)),
        ("all", "i64", Value::Int(-1_234_567_890_123_456_789)),
        ("all", "u64", Value::UInt(12_345_678_901_234_567_890)),
        ("all", "f32", Value::Float(-3.25)),
        ("all", "f64", Value::Float(6.022_140_76e23)),
        ("all", "text", Value::Text("EDGEBUS!".into())),
        ("all", "c0", Value::Bool(true)),
        ("all", "c1", Value::Bool(false)),
        ("all", "d1", Value::Bool(true)),
        ("meter", "voltage", Value::Float(230.5)),
        ("meter", "current", Value::Float(5.25)),
        ("meter", "power", Value::Float(1210.0625)),
    ];
    wait_for(20, "every point good", || {
        expect.iter().all(|(d, p, _)| good(&h.last(d, p)).is_some())
    })
    .await;
    for (d, p, v) in &expect {
        assert_eq!(good(&h.last(d, p)), Some(v), "{d}/{p}");
    }
    wait_for(20, "absent unit offline", || {
        h.availability("absent") == vec![false]
    })
    .await;
    assert_eq!(h.availability("all"), vec![true]);
    assert_eq!(h.availability("meter"), vec![true]);

    h.set("all", "level", "4242", false).await;
    h.set("all", "setpoint", "21.5", false).await;
    h.set("all", "relay", "true", false).await;
    wait_for(20, "read back", || {
        good(&h.last("all", "level")) == Some(&Value::UInt(4242))
            && good(&h.last("all", "setpoint")) == Some(&Value::Float(21.5))
            && good(&h.last("all", "relay")) == Some(&Value::Bool(true))
    })
    .await;
    wait_for(10, "two more cycles", || {
        h.readings("meter", "power").len() >= 4
    })
    .await;
    h.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let results = h.publishes();
    assert_eq!(
        results.iter().filter(|(_, v)| v["ok"] == true).count(),
        3,
        "{results:?}"
    );
    let unit1 = peer.requests(1);
    // Writes as pymodbus decoded them: FC 6 / 16 / 5 with the expected words.
    // (pymodbus reports no count for the single-item FC 5 and 6.)
    assert!(
        unit1
            .iter()
            .any(|r| r[..3] == [1, 6, 24] && r.last() == Some(&4242)),
        "{unit1:?}"
    );
    assert!(unit1.contains(&vec![1, 16, 26, 2, 0x41AC, 0]), "{unit1:?}");
    assert!(
        unit1
            .iter()
            .any(|r| r[..3] == [1, 5, 4] && r.last() == Some(&1)),
        "{unit1:?}"
    );
    // Reads: exactly the planned ranges, each once per cycle.
    let mut per_range: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
    for r in unit1.iter().filter(|r| r[1] <= 4) {
        *per_range.entry((r[1], r[2], r[3])).or_default() += 1;
    }
    assert_eq!(
        per_range.keys().copied().collect::<Vec<_>>(),
        vec![(1, 0, 5), (2, 1, 1), (3, 0, 28)]
    );
    let counts: Vec<usize> = per_range.values().copied().collect();
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{per_range:?}"
    );
    // The gapped meter: one merged read refused, then one read per point.
    let unit2 = peer.requests(2);
    assert_eq!(unit2.iter().filter(|r| r[3] == 14).count(), 1, "{unit2:?}");
    for a in [0, 6, 12] {
        assert!(
            unit2.iter().filter(|r| r[2] == a && r[3] == 2).count() >= 3,
            "{unit2:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_over_tcp() {
    scenario(Link::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_over_rtu_on_a_pty_pair() {
    if !emulation::serial_usable("pymodbus_over_rtu_on_a_pty_pair") {
        return;
    }
    scenario(Link::Rtu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_rtu_framing_over_tcp() {
    scenario(Link::RtuOverTcp).await;
}
