//! The gateway against an MQTT-SN client no one here wrote: PyPI `mqtt-sn-12`
//! (`pip install mqtt-sn-12`), driven through its Python API.

mod mqttsn_support;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use edgebus::message::QoS;
use edgebus::mqttsn::Delivery;
use mqttsn_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn have_client() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import mqttsn12.client.MqttSnClient"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    peer_available("python3 with PyPI package mqtt-sn-12", ok)
}

const PRELUDE: &str = r#"
import sys, time
from mqttsn12.client.MqttSnClient import MqttSnClient, MqttSnListener
port = int(sys.argv[1])
c = MqttSnClient()
c.set_timeout(5)
"#;

fn python(script: &str, port: u16) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(format!("{PRELUDE}{script}"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn python_client_publishes_at_qos_0_1_2() {
    if !have_client() {
        return;
    }
    let h = start(|c| c.topic_prefix = "sn".into()).await;
    let out = python(
        r#"
c.set_client_id("py-pub")
c.set_keep_alive(30)
c.open("127.0.0.1", port)
c.send_connect()
for q in (0, 1, 2):
    c.send_publish("py/qos%d" % q, "m%d" % q, q)
c.send_disconnect()
c.close()
print("DONE")
"#,
        h.addr.port(),
    )
    .output()
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "python client failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("three publishes", || h.uplink.topics().len() == 3).await;
    assert_eq!(
        h.uplink.topics(),
        [
            ("sn/py/qos0".to_string(), b"m0".to_vec(), 0, false),
            ("sn/py/qos1".to_string(), b"m1".to_vec(), 1, false),
            ("sn/py/qos2".to_string(), b"m2".to_vec(), 2, false),
        ]
    );
}

#[tokio::test]
async fn python_client_subscribes_with_wildcards_and_receives() {
    if !have_client() {
        return;
    }
    let h = start(|c| c.topic_prefix = "sn".into()).await;
    let mut child = python(
        r#"
import logging
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
class L(MqttSnListener):
    def message_arrived(self, msg):
        print("GOT", msg.get_topic_name(), msg.get_payload().decode(), msg.get_qos(), flush=True)
c.set_client_id("py-sub")
c.set_keep_alive(30)
c.open("127.0.0.1", port)
c.send_connect()
c.send_subscribe("cmd/+/set", 1, L())
print("SUBSCRIBED", flush=True)
end = time.time() + 10
while time.time() < end:
    c.polling()
    time.sleep(0.02)
"#,
        h.addr.port(),
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("python client did not subscribe")
        .unwrap();
    assert_eq!(first.as_deref(), Some("SUBSCRIBED"));
    assert_eq!(
        h.downlink.log.lock().unwrap().as_slice(),
        ["sub sn/cmd/+/set 1"]
    );
    // This client never acknowledges a QoS 1 PUBLISH (it compares the decoded QoS with the
    // flag bits), so the broker messages come at QoS 0 here; our own client covers QoS 1/2.
    for (dev, qos) in [("pump", QoS::AtMostOnce), ("fan", QoS::AtMostOnce)] {
        h.deliver
            .send(Delivery {
                topic: format!("sn/cmd/{dev}/set"),
                payload: Bytes::from(format!("on-{dev}")),
                qos,
                retain: false,
            })
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let l = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        match l {
            Ok(Ok(Some(l))) => got.push(l),
            other => {
                let _ = child.kill().await;
                let mut err = String::new();
                use tokio::io::AsyncReadExt;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
                panic!("python client got {got:?}, then {other:?}; its log:\n{err}");
            }
        }
    }
    assert_eq!(
        got,
        ["GOT cmd/pump/set on-pump 0", "GOT cmd/fan/set on-fan 0"]
    );
    let _ = child.kill().await;
}

#[tokio::test]
async fn python_client_will_on_keep_alive_expiry() {
    if !have_client() {
        return;
    }
    let h = start(|_| {}).await;
    let out = python(
        r#"
c.set_client_id("py-will")
c.set_keep_alive(1)
c.set_will("py/will/status", "vanished", 1, True)
c.open("127.0.0.1", port)
c.send_connect()
print("CONNECTED")
# vanish without DISCONNECT
c.datagram_socket.close()
"#,
        h.addr.port(),
    )
    .output()
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CONNECTED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("will published after 1.5 x keep-alive", || {
        h.uplink.topics() == [("py/will/status".to_string(), b"vanished".to_vec(), 1, true)]
    })
    .await;
}
