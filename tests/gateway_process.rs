//! The gateway as a process against a real mosquitto: graceful stop with a backlog, restart,
//! `kill -9` during a drain. Every reading is numbered (synthetic source), so the recorder can
//! prove that nothing was lost, and bound the duplicates.

mod bin_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bin_support::{signal, wait_exit};
use support::*;

const TOPIC: &str = "t/gw/gen/counter";
/// The upstream in-flight window; acknowledged rows whose delete was not yet committed count
/// against it too, so a crash can resend at most this many messages.
const INFLIGHT: u64 = 20;

fn config(dir: &Path, port: u16, start: u64, count: u64, enabled: bool) -> PathBuf {
    let f = dir.join(format!("edgebus-{start}-{count}-{enabled}.yaml"));
    std::fs::write(
        &f,
        format!(
            "gateway: {{ id: gw, data_dir: {data}, clock_check: off }}\n\
             upstream: {{ url: 'mqtt://127.0.0.1:{port}', topic_prefix: t, max_inflight: {INFLIGHT} }}\n\
             devices:\n  - {{ name: gen, type: synthetic, poll: 2ms, start: {start}, count: {count}, enabled: {enabled} }}\n",
            data = dir.join("data").display(),
        ),
    )
    .expect("write config");
    f
}

fn spawn(cfg: &Path) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("edgebus"))
        .args(["run", "-c"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn edgebus")
}

fn depth(dir: &Path) -> u64 {
    edgebus::outbox::stats_from_file(&dir.join("data"))
        .map(|s| s.depth)
        .unwrap_or(0)
}

fn online_count(lines: &[(String, String)]) -> usize {
    lines
        .iter()
        .filter(|(t, p)| t == "t/gw/status" && p == "online")
        .count()
}

fn values(rec: &Recorder) -> Vec<u64> {
    rec.payloads(TOPIC)
        .iter()
        .filter_map(|p| json_value(p).and_then(|v| v.as_u64()))
        .collect()
}

/// Builds the backlog with no broker, stops gracefully (SIGTERM), and checks the disk holds
/// every reading.
fn backlog_without_broker(dir: &Path, port: u16, n: u64) {
    let cfg = config(dir, port, 0, n, true);
    let mut gw = spawn(&cfg);
    // Readings go to memory, then to disk within the commit interval.
    std::thread::sleep(Duration::from_millis(2 * n + 1500));
    signal(&gw, libc::SIGTERM);
    assert!(
        wait_exit(&mut gw, Duration::from_secs(15)).success(),
        "graceful stop exits 0"
    );
    // Plus the device's retained `online` availability, queued when it started.
    assert_eq!(depth(dir), n + 1, "every reading is on disk after SIGTERM");
}

#[test]
fn sigterm_with_backlog_then_restart_loses_nothing() {
    if !bin_support::runnable("sigterm_with_backlog_then_restart_loses_nothing")
        || !have_mosquitto()
    {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    backlog_without_broker(t.path(), port, 300);

    let _broker = Mosquitto::start(port);
    let rec = Recorder::start(port, "t/#");
    let mut gw = spawn(&config(t.path(), port, 300, 300, true));
    let done = rec.wait_for(Duration::from_secs(30), |l| {
        l.iter().filter(|(t, _)| t == TOPIC).count() >= 600
    });
    signal(&gw, libc::SIGTERM);
    assert!(wait_exit(&mut gw, Duration::from_secs(15)).success());
    assert!(done, "all 600 readings arrived (got {})", rec.count(TOPIC));
    let v = values(&rec);
    assert_eq!(v, (0..600).collect::<Vec<u64>>(), "exactly once, in order");
    assert_eq!(depth(t.path()), 0, "the outbox is empty once drained");
}

#[test]
fn kill_9_during_drain_loses_nothing_and_keeps_the_file_sound() {
    if !bin_support::runnable("kill_9_during_drain_loses_nothing_and_keeps_the_file_sound")
        || !have_mosquitto()
    {
        return;
    }
    const N: u64 = 3000;
    const KILLS: usize = 8;
    let t = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    backlog_without_broker(t.path(), port, N);

    let _broker = Mosquitto::start(port);
    let rec = Recorder::start(port, "t/#");
    let drain_cfg = config(t.path(), port, 0, 0, false);
    for i in 0..KILLS {
        let mut gw = spawn(&drain_cfg);
        std::thread::sleep(Duration::from_millis(150 + (i as u64 * 97) % 400));
        signal(&gw, libc::SIGKILL);
        let _ = wait_exit(&mut gw, Duration::from_secs(5));
        let conn =
            rusqlite::Connection::open(t.path().join("data").join("outbox.db")).expect("open db");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "integrity after kill {i}");
    }
    let online_before = online_count(&rec.lines.lock().expect("lock"));
    let mut gw = spawn(&drain_cfg);
    // The earlier runs may already have drained everything: wait until this one is up (its
    // `online`) so the SIGTERM below tests a graceful stop, not a half-started process.
    assert!(
        rec.wait_for(Duration::from_secs(20), |l| online_count(l) > online_before),
        "the last gateway connects"
    );
    let all = rec.wait_for(Duration::from_secs(60), |l| {
        let mut seen = std::collections::HashSet::new();
        for (t, p) in l.iter().filter(|(t, _)| t == TOPIC) {
            let _ = t;
            if let Some(v) = json_value(p).and_then(|v| v.as_u64()) {
                seen.insert(v);
            }
        }
        seen.len() as u64 == N
    });
    signal(&gw, libc::SIGTERM);
    assert!(wait_exit(&mut gw, Duration::from_secs(15)).success());
    let v = values(&rec);
    assert!(
        all,
        "every reading arrived at least once ({} distinct of {N})",
        {
            let s: std::collections::HashSet<_> = v.iter().collect();
            s.len()
        }
    );
    // Order: the first arrival of each value is in increasing order.
    let mut firsts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for x in &v {
        if seen.insert(*x) {
            firsts.push(*x);
        }
    }
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "replay keeps order");
    let dups = v.len() as u64 - N;
    let bound = KILLS as u64 * INFLIGHT;
    eprintln!(
        "kill -9 x{KILLS}: {} deliveries of {N} readings, {dups} duplicates (bound {bound})",
        v.len()
    );
    assert!(dups <= bound, "duplicates {dups} exceed the bound {bound}");
    assert_eq!(depth(t.path()), 0);
}
