//! Outbox behaviour against a real SQLite file: durability modes, restart, limits, full disk,
//! corrupt file.

use std::path::Path;
use std::time::{Duration, SystemTime};

use edgebus::message::{Message, QoS};
use edgebus::outbox::{BufferConfig, Durability, Outbox, ROW_OVERHEAD, stats_from_file};

fn msg(topic: &str, n: u64) -> Message {
    Message::new(
        topic,
        format!("{n:08}").into_bytes(),
        QoS::AtLeastOnce,
        false,
    )
}

fn cfg(d: Durability) -> BufferConfig {
    BufferConfig {
        durability: d,
        commit_interval: Some(Duration::from_millis(20)),
        ..Default::default()
    }
}

/// Hands out and acknowledges everything, returning the payload numbers in order.
fn drain(o: &Outbox) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let b = o.next_batch(100);
        if b.is_empty() {
            break;
        }
        for m in b {
            out.push(std::str::from_utf8(&m.payload).unwrap().parse().unwrap());
            o.ack(m.seq);
        }
    }
    out
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn offline_link_up_sends_from_memory_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path(), &cfg(Durability::Offline)).unwrap();
    o.set_connected(true);
    for n in 0..100 {
        o.push(msg("a", n)).await.unwrap();
    }
    assert_eq!(drain(&o), (0..100).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = o.stats();
    assert_eq!(s.depth, 0);
    assert_eq!(s.spilled, 0, "acknowledged quickly: never written");
    assert_eq!(s.acked, 100);
    o.close().await.unwrap();
}

#[tokio::test]
async fn offline_link_down_commits_and_survives_restart_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path(), &cfg(Durability::Offline)).unwrap();
    for n in 0..1000 {
        o.push(msg(if n % 2 == 0 { "a" } else { "b" }, n))
            .await
            .unwrap();
    }
    wait_until(|| o.stats().durable_upto > 1000).await;
    assert_eq!(o.stats().on_disk, 1000);
    // Crash: only what was committed survives — here, everything.
    let last_seq = o.stats().next_seq;
    o.simulate_crash();
    drop(o);
    let o = Outbox::open(dir.path(), &cfg(Durability::Offline)).unwrap();
    assert_eq!(o.stats().depth, 1000);
    assert!(o.stats().next_seq >= last_seq, "seqs never go back");
    assert_eq!(drain(&o), (0..1000).collect::<Vec<_>>());
    o.close().await.unwrap();
    let o = Outbox::open(dir.path(), &cfg(Durability::Offline)).unwrap();
    assert_eq!(
        o.stats().depth,
        0,
        "acknowledged rows were deleted at close"
    );
    o.close().await.unwrap();
}

#[tokio::test]
async fn spill_after_writes_unacknowledged_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.spill_after = Duration::from_millis(100);
    let o = Outbox::open(dir.path(), &c).unwrap();
    o.set_connected(true);
    for n in 0..10 {
        o.push(msg("a", n)).await.unwrap();
    }
    let sent = o.next_batch(100);
    assert_eq!(sent.len(), 10);
    assert_eq!(o.stats().spilled, 0);
    wait_until(|| o.stats().spilled == 10).await;
    o.simulate_crash();
    let o = Outbox::open(dir.path(), &c).unwrap();
    assert_eq!(drain(&o), (0..10).collect::<Vec<_>>());
    o.close().await.unwrap();
}

#[tokio::test]
async fn graceful_close_writes_memory_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.commit_interval = Some(Duration::from_secs(60));
    c.spill_after = Duration::from_secs(60);
    let o = Outbox::open(dir.path(), &c).unwrap();
    o.set_connected(true);
    for n in 0..500 {
        o.push(msg("a", n)).await.unwrap();
    }
    let _inflight = o.next_batch(50); // handed out, never acknowledged
    assert_eq!(o.stats().spilled, 0);
    o.close().await.unwrap();
    assert!(o.push(msg("a", 1)).await.is_err(), "closed");
    let s = stats_from_file(dir.path()).unwrap();
    assert_eq!(s.depth, 500);
    let o = Outbox::open(dir.path(), &c).unwrap();
    assert_eq!(drain(&o), (0..500).collect::<Vec<_>>());
    o.close().await.unwrap();
}

#[tokio::test]
async fn always_mode_commits_before_handing_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Always);
    c.commit_interval = Some(Duration::from_millis(100));
    let o = Outbox::open(dir.path(), &c).unwrap();
    o.set_connected(true);
    let seq = o.push(msg("a", 0)).await.unwrap();
    // Not committed yet (the commit is grouped), so not sendable.
    assert!(o.next_batch(10).is_empty() || o.stats().durable_upto > seq);
    let seq2 = o.push_confirmed(msg("a", 1)).await.unwrap();
    assert!(o.stats().durable_upto > seq2);
    let b = o.next_batch(10);
    assert_eq!(b.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seq, seq2]);
    // Crash right away: both were committed, both are replayed.
    o.simulate_crash();
    let o = Outbox::open(dir.path(), &c).unwrap();
    assert_eq!(drain(&o), vec![0, 1]);
    o.close().await.unwrap();
}

#[tokio::test]
async fn seqs_never_repeat_after_empty_queue_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(Durability::Always);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..3 {
        let o = Outbox::open(dir.path(), &c).unwrap();
        for n in 0..20 {
            let s = o.push_confirmed(msg("a", n)).await.unwrap();
            assert!(seen.insert(s), "seq {s} repeated in round {round}");
        }
        drain(&o);
        assert_eq!(o.stats().depth, 0);
        if round == 1 {
            o.simulate_crash();
        } else {
            o.close().await.unwrap();
        }
    }
    // Seqs only grow.
    let v: Vec<u64> = seen.iter().copied().collect();
    assert!(v.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn max_bytes_evicts_oldest_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.max_bytes = 64 * 1024;
    c.memory_limit = 64 * 1024;
    let o = Outbox::open(dir.path(), &c).unwrap();
    let size = (1 + 8) as u64 + ROW_OVERHEAD; // topic "a" + 8-byte payload
    let fit = c.max_bytes / size;
    let total = 5000u64;
    for n in 0..total {
        o.push(msg("a", n)).await.unwrap();
        if n % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await; // let some reach the disk
        }
    }
    wait_until(|| o.stats().bytes <= c.max_bytes && o.stats().durable_upto >= o.stats().next_seq)
        .await;
    let s = o.stats();
    assert_eq!(s.depth, fit, "exactly what fits remains");
    assert_eq!(s.dropped, total - fit);
    assert_eq!(s.dropped_max_bytes, total - fit);
    let got = drain(&o);
    assert_eq!(
        got,
        (total - fit..total).collect::<Vec<_>>(),
        "the newest remain, in order"
    );
    o.close().await.unwrap();
    assert_eq!(stats_from_file(dir.path()).unwrap().dropped, total - fit);
}

#[tokio::test]
async fn max_age_drops_old_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.max_age = Duration::from_secs(3600);
    let o = Outbox::open(dir.path(), &c).unwrap();
    for n in 0..10 {
        let mut m = msg("a", n);
        if n < 4 {
            m.ts = SystemTime::now() - Duration::from_secs(7200);
        }
        o.push(m).await.unwrap();
    }
    wait_until(|| o.stats().dropped == 4).await;
    assert_eq!(o.stats().dropped_max_age, 4);
    assert_eq!(drain(&o), (4..10).collect::<Vec<_>>());
    o.close().await.unwrap();
}

#[tokio::test]
async fn push_confirmed_refuses_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.max_bytes = 64 * 1024;
    let o = Outbox::open(dir.path(), &c).unwrap();
    let mut accepted = 0u64;
    loop {
        match o.push_confirmed(msg("a", accepted)).await {
            Ok(_) => accepted += 1,
            Err(edgebus::outbox::OutboxError::Congestion) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(o.stats().dropped, 0, "nothing evicted for a confirmed push");
    assert_eq!(o.stats().depth, accepted);
    o.close().await.unwrap();
}

#[tokio::test]
async fn large_backlog_lives_on_disk_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.memory_limit = 64 * 1024;
    let o = Outbox::open(dir.path(), &c).unwrap();
    let total = 100_000u64;
    for n in 0..total {
        o.push(msg(if n % 3 == 0 { "x" } else { "y" }, n))
            .await
            .unwrap();
        if n % 5000 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    o.sync().await.unwrap();
    wait_until(|| o.stats().in_memory < 2000).await;
    let s = o.stats();
    assert_eq!(s.depth, total);
    assert!(s.in_memory < 2000, "{} in memory", s.in_memory);
    // Replay over a connection that drops halfway: everything, in order, after the rewind.
    o.set_connected(true);
    let first = o.next_batch(100);
    assert_eq!(first.len(), 100);
    for m in &first[..50] {
        o.ack(m.seq);
    }
    o.rewind();
    let got = drain(&o);
    assert_eq!(got, (50..total).collect::<Vec<_>>());
    assert_eq!(o.stats().depth, 0);
    o.close().await.unwrap();
}

#[tokio::test]
async fn full_disk_is_counted_survived_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(Durability::Offline);
    let o = Outbox::open(dir.path(), &c).unwrap();
    for n in 0..100 {
        o.push(msg("a", n)).await.unwrap();
    }
    o.sync().await.unwrap();
    let pages = o.page_count().unwrap();
    o.set_max_page_count(pages).unwrap();
    for n in 100..3000 {
        o.push(msg("a", n)).await.unwrap();
    }
    wait_until(|| o.stats().full_disk_errors >= 2).await;
    let s = o.stats();
    assert!(s.degraded);
    assert_eq!(s.depth, 3000, "held in memory");
    // Space returns: writing resumes, everything reaches the disk.
    o.set_max_page_count(1_000_000).unwrap();
    wait_until(|| !o.stats().degraded && o.stats().durable_upto >= o.stats().next_seq).await;
    o.simulate_crash();
    let o = Outbox::open(dir.path(), &c).unwrap();
    assert_eq!(drain(&o), (0..3000).collect::<Vec<_>>());
    o.close().await.unwrap();
}

fn corrupt_pages(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    // Leave the header page, smash the rest.
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&vec![0xA5u8; (len - 4096) as usize]).unwrap();
}

#[tokio::test]
async fn corrupt_file_is_quarantined_and_a_fresh_one_started() {
    for garbage_header in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        if garbage_header {
            std::fs::write(&path, vec![0x42u8; 64 * 1024]).unwrap();
        } else {
            let o = Outbox::open(dir.path(), &cfg(Durability::Always)).unwrap();
            for n in 0..2000 {
                o.push(msg("a", n)).await.unwrap();
            }
            o.close().await.unwrap();
            drop(o);
            // Fold the WAL into the main file, then damage it.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
            drop(conn);
            corrupt_pages(&path);
        }
        let o = Outbox::open(dir.path(), &cfg(Durability::Always)).unwrap();
        assert_eq!(o.stats().depth, 0);
        o.push_confirmed(msg("a", 1)).await.unwrap();
        o.close().await.unwrap();
        let moved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("outbox.db.corrupt-")
            })
            .collect();
        assert_eq!(moved.len(), 1, "garbage_header={garbage_header}");
        assert_eq!(stats_from_file(dir.path()).unwrap().depth, 1);
    }
}

#[tokio::test]
async fn stats_from_file_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path(), &cfg(Durability::Always)).unwrap();
    for n in 0..10 {
        o.push_confirmed(msg("a", n)).await.unwrap();
    }
    let s = stats_from_file(dir.path()).unwrap();
    assert_eq!(s.depth, 10);
    assert!(s.oldest_age.is_some());
    o.close().await.unwrap();
}

#[test]
fn config_parses_and_validates() {
    let c: BufferConfig = serde_json::from_str(
        r#"{"durability":"always","max_bytes":"1MiB","max_age":"2d","commit_interval":"80ms"}"#,
    )
    .unwrap();
    assert_eq!(c.durability, Durability::Always);
    assert_eq!(c.max_bytes, 1024 * 1024);
    assert_eq!(c.max_age, Duration::from_secs(2 * 86400));
    assert!(c.validate().is_empty());
    let bad: BufferConfig =
        serde_json::from_str(r#"{"durability":"always","commit_interval":"1s"}"#).unwrap();
    assert_eq!(bad.validate().len(), 1);
    assert!(serde_json::from_str::<BufferConfig>(r#"{"max_byte":"1MiB"}"#).is_err());
}

/// Pushes until memory holds more than half of `memory_limit` (plain pushes never wait for
/// that); returns how many.
async fn fill_past_half_of_memory(o: &Outbox, c: &BufferConfig) -> u64 {
    let mut n = 0;
    while o.stats().memory_bytes * 2 <= c.memory_limit {
        o.push(msg("a", n)).await.unwrap();
        n += 1;
    }
    n
}

/// With the link up, a confirmed push beyond half of `memory_limit` is acknowledged only once
/// the broker's acknowledgements have made room (the client's one-in-flight window is the
/// flow control, instead of a write to disk and a read back). With the link down it is
/// acknowledged at once: buffering is what the outbox is for.
#[tokio::test]
async fn confirmed_push_waits_for_the_broker_while_the_link_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.memory_limit = 64 * 1024;
    c.spill_after = Duration::from_secs(30);
    let o = Outbox::open(dir.path(), &c).unwrap();
    o.set_connected(true);
    let n = fill_past_half_of_memory(&o, &c).await;
    let waiting = tokio::spawn({
        let o = o.clone();
        async move { o.push_confirmed(msg("a", 1_000_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "acknowledged while memory is over half the limit"
    );
    // The broker acknowledges what was sent: room again, the push is confirmed.
    let sent = drain(&o);
    assert!(
        sent.len() as u64 > n,
        "the waiting message was queued meanwhile"
    );
    let seq = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("confirmed once the broker drained memory")
        .unwrap()
        .unwrap();
    assert_eq!(sent.last(), Some(&1_000_000));
    assert!(seq >= n);
    assert_eq!(o.stats().spilled, 0, "nothing went to disk");

    // Link down: confirmed at once, however full memory is.
    for k in 0..n {
        o.push(msg("b", k)).await.unwrap();
    }
    o.set_connected(false);
    tokio::time::timeout(Duration::from_secs(2), o.push_confirmed(msg("b", n)))
        .await
        .expect("no waiting while the link is down")
        .unwrap();
    o.close().await.unwrap();
}

/// The wait is bounded by `spill_after`: a broker that stops acknowledging does not hold a
/// client's acknowledgement longer than the message would stay in memory anyway.
#[tokio::test]
async fn confirmed_push_waits_at_most_spill_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Offline);
    c.memory_limit = 64 * 1024;
    c.spill_after = Duration::from_millis(400);
    let o = Outbox::open(dir.path(), &c).unwrap();
    o.set_connected(true);
    let n = fill_past_half_of_memory(&o, &c).await;
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), o.push_confirmed(msg("a", n)))
        .await
        .expect("confirmed after spill_after at the latest")
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    o.close().await.unwrap();
}
