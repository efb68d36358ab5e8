//! The outbox: a bounded, durable FIFO between the pipeline and the broker (SQLite, WAL).
//!
//! A message leaves the outbox only when the broker acknowledged it (QoS 1/2) or it was written
//! to the socket (QoS 0), or when a limit (`max_bytes`, `max_age`) drops it, oldest first and
//! counted. Producers call [`Outbox::push`]; the upstream (the only consumer) calls
//! [`Outbox::next_batch`], [`Outbox::ack`], [`Outbox::rewind`] and [`Outbox::set_connected`].
//!
//! Writes are grouped: a background thread commits pending rows every commit interval, so the
//! SD card sees one transaction per interval, never one per reading.

mod config;
mod flusher;
mod queue;
mod store;

use portable_atomic::AtomicU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;
use tokio::sync::{Notify, watch};

pub use config::{BufferConfig, Durability};
pub use queue::{ROW_OVERHEAD, message_size};

use crate::message::Message;
use queue::{DropReason, Queue};

/// Backlog rows read from disk at a time.
const READAHEAD: usize = 512;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("no outbox file at {0}")]
    Missing(PathBuf),
    #[error("outbox is full")]
    Congestion,
    #[error("outbox is closed")]
    Closed,
    #[error("outbox could not commit: {0}")]
    Storage(String),
    #[error("{0} messages could not be written to disk at shutdown")]
    Unflushed(u64),
    #[error("invalid buffer config: {0}")]
    Config(String),
}

/// Figures for `edgebus buffer stats` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages queued (not acknowledged, not dropped).
    pub depth: u64,
    /// Their size as counted against `max_bytes`.
    pub bytes: u64,
    /// Age of the oldest queued message (by its timestamp).
    pub oldest_age: Option<Duration>,
    /// Dropped by `max_bytes` or `max_age` since the file was created.
    pub dropped: u64,
    pub dropped_max_bytes: u64,
    pub dropped_max_age: u64,
    /// Queued messages held in RAM, and queued rows on disk.
    pub in_memory: u64,
    /// RAM those messages take, as counted against `memory_limit`.
    pub memory_bytes: u64,
    pub on_disk: u64,
    /// Messages written to disk by this process.
    pub spilled: u64,
    /// Messages acknowledged by this process.
    pub acked: u64,
    /// Commits refused with SQLITE_FULL, and other failed commits.
    pub full_disk_errors: u64,
    pub write_errors: u64,
    /// Next sequence number to be assigned.
    pub next_seq: u64,
    /// Every seq below this is on disk, acknowledged or dropped.
    pub durable_upto: u64,
    /// The last commit failed; messages are held in memory until writing works again.
    pub degraded: bool,
}

/// Outcome of commits, for `push_confirmed` and `sync`.
#[derive(Debug, Clone, Copy, Default)]
struct Durable {
    upto: u64,
    failures: u64,
}

#[derive(Debug, Default)]
struct State {
    q: Queue,
    connected: bool,
    closing: bool,
    crashed: bool,
    degraded: bool,
    /// `sync()` asked for everything to be written now.
    force: bool,
    /// A confirmed push waits for the broker to drain memory (see `wait_for_drain`).
    drain_waiting: bool,
    /// The consumer's last `next_batch` came back short: it waits for new messages. Only
    /// then does a push wake it; with its window full it runs on acknowledgements anyway, and
    /// a wake-up per push would cost a thread hand-over per message for nothing.
    consumer_idle: bool,
}

struct Shared {
    cfg: BufferConfig,
    dir: PathBuf,
    state: Mutex<State>,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    wake: std::sync::mpsc::SyncSender<()>,
    sendable: Notify,
    /// Memory was trimmed (for producers waiting in `push`).
    room: Notify,
    durable: watch::Sender<Durable>,
    /// `Some(unflushed)` once the flusher has stopped.
    stopped: watch::Sender<Option<u64>>,
    full_errors: AtomicU64,
    write_errors: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the outbox down with it: the data is still consistent
    // (every mutation is a few counter updates).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    fn hard_memory_cap(&self) -> u64 {
        self.cfg
            .max_bytes
            .min(self.cfg.memory_limit.saturating_mul(16))
    }
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the flusher writes what is in memory and stops. `close()` is the way to
        // know it happened.
        lock(&self.shared.state).closing = true;
        self.shared.wake();
    }
}

/// Cheap, cloneable handle to the outbox.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    /// Opens/creates `<data_dir>/outbox.db` (WAL). A corrupt file is moved aside
    /// (`outbox.db.corrupt-<unix-ts>`), logged loudly, and a fresh one started.
    pub fn open(data_dir: &Path, cfg: &BufferConfig) -> Result<Outbox, OutboxError> {
        if let Some((path, msg)) = cfg.validate().into_iter().next() {
            return Err(OutboxError::Config(format!("{path}: {msg}")));
        }
        let (writer, info) = store::open(data_dir)?;
        let reader = store::open_reader(data_dir)?;
        if info.count > 0 {
            tracing::info!(
                file = %data_dir.join(store::FILE_NAME).display(),
                messages = info.count,
                bytes = info.bytes,
                "outbox opened with a backlog; it is replayed in order"
            );
        }
        let q = Queue {
            disk_count: info.count,
            disk_bytes: info.bytes,
            next_seq: info.next_seq,
            reserved: info.next_seq + store::SEQ_BLOCK,
            dropped_base: info.dropped,
            ..Default::default()
        };
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let (durable, _) = watch::channel(Durable {
            upto: info.next_seq,
            failures: 0,
        });
        let (stopped, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            dir: data_dir.to_path_buf(),
            state: Mutex::new(State {
                q,
                ..Default::default()
            }),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            wake: wake_tx,
            sendable: Notify::new(),
            room: Notify::new(),
            durable,
            stopped,
            full_errors: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-flush".into())
            .spawn(move || flusher::run(s2, wake_rx))
            .map_err(|e| OutboxError::Io(data_dir.to_path_buf(), e))?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn committed_only(&self, st: &State) -> bool {
        self.shared().cfg.durability == Durability::Always && !st.degraded
    }

    fn push_inner(&self, msg: Message, evict: bool) -> Result<u64, OutboxError> {
        let sh = self.shared();
        let mut st = lock(&sh.state);
        if st.closing || st.crashed {
            return Err(OutboxError::Closed);
        }
        let size = message_size(&msg);
        if !evict && st.q.total_bytes() + size > sh.cfg.max_bytes {
            metrics::counter!("edgebus_outbox_congestion_total").increment(1);
            return Err(OutboxError::Congestion);
        }
        let seq = st.q.push(msg, Instant::now());
        if st.q.next_seq >= st.q.reserved {
            tracing::error!(
                seq,
                "outbox seq reservation not yet on disk (disk failing?)"
            );
        }
        // Oldest first: in memory only when no older rows wait on disk; otherwise the flusher
        // evicts those (in its next cycle, counted exactly).
        let mut wake = false;
        while st.q.total_bytes() > sh.cfg.max_bytes {
            if st.q.cold_count() > 0 {
                wake = true;
                break;
            }
            if st.q.drop_mem_front(DropReason::MaxBytes).is_none() {
                break;
            }
            metrics::counter!("edgebus_outbox_dropped_total", "reason" => "max_bytes").increment(1);
        }
        if st.degraded && st.q.mem_bytes > sh.hard_memory_cap() {
            // The disk refuses writes and RAM is at its cap: the oldest in memory go.
            while st.q.mem_bytes > sh.hard_memory_cap() {
                if st.q.drop_mem_front(DropReason::MaxBytes).is_none() {
                    break;
                }
                metrics::counter!("edgebus_outbox_dropped_total", "reason" => "memory")
                    .increment(1);
            }
        }
        let always = sh.cfg.durability == Durability::Always;
        if st.q.mem_bytes > sh.cfg.memory_limit || (always && st.q.unstored_count >= 8192) {
            wake = true;
        }
        let notify = !self.committed_only(&st) && std::mem::take(&mut st.consumer_idle);
        drop(st);
        if wake {
            sh.wake();
        }
        if notify {
            sh.sendable.notify_one();
        }
        Ok(seq)
    }

    /// Enqueues a message and returns its sequence number. When full, the oldest go first
    /// (counted as dropped). Never waits for the network or the disk.
    pub async fn push(&self, msg: Message) -> Result<u64, OutboxError> {
        let seq = self.push_inner(msg, true)?;
        self.wait_for_room().await;
        Ok(seq)
    }

    /// Back-pressure on RAM: when producers outrun the disk, memory would grow without bound;
    /// wait (for the disk, never for the network) until the flusher has moved the excess out.
    /// Not while the disk refuses writes: then the hard cap and eviction apply.
    async fn wait_for_room(&self) {
        let sh = self.shared();
        loop {
            let notified = sh.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = lock(&sh.state);
                if st.degraded
                    || st.closing
                    || st.crashed
                    || st.q.mem_bytes <= sh.cfg.memory_limit.saturating_mul(2)
                {
                    return;
                }
            }
            sh.wake();
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Flow control for confirmed pushes while the link is up (`offline` durability): when
    /// producers outrun the broker, memory fills and the flusher would write the excess to
    /// disk only to read it back moments later, which costs SD card wear and the CPU the
    /// broker connection needs. A client that waits for its acknowledgement (one in flight,
    /// MQTT-SN QoS 1/2) is the one producer that can be slowed down without losing anything,
    /// so its acknowledgement waits until the broker's acknowledgements have brought memory
    /// back to half of `memory_limit`. Never longer than `spill_after` (by then the message
    /// would be written anyway), and not at all while the link is down or the disk fails.
    async fn wait_for_drain(&self) {
        let sh = self.shared();
        let threshold = sh.cfg.memory_limit / 2;
        let deadline = tokio::time::Instant::now() + sh.cfg.spill_after;
        loop {
            let notified = sh.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&sh.state);
                if !st.connected
                    || st.degraded
                    || st.closing
                    || st.crashed
                    || st.q.mem_bytes <= threshold
                {
                    return;
                }
                st.drain_waiting = true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// For MQTT-SN QoS 1/2: returns once the outbox holds the message (with
    /// `durability: always`, once it is committed, which starts at once). Returns
    /// `Err(Congestion)` instead of evicting when the outbox is full.
    pub async fn push_confirmed(&self, msg: Message) -> Result<u64, OutboxError> {
        let mut rx = self.shared().durable.subscribe();
        let before = rx.borrow().failures;
        let seq = self.push_inner(msg, false)?;
        self.wait_for_room().await;
        if self.shared().cfg.durability == Durability::Offline {
            self.wait_for_drain().await;
            return Ok(seq);
        }
        // A client waits for this commit: start it now instead of at the end of the commit
        // interval. Whatever arrives while it runs joins the next one (group commit), so
        // waiting clients cost one fsync per group, not one per message.
        lock(&self.shared().state).force = true;
        self.shared().wake();
        loop {
            {
                let d = rx.borrow_and_update();
                if d.upto > seq {
                    return Ok(seq);
                }
                if d.failures > before {
                    return Err(OutboxError::Storage("commit failed".into()));
                }
            }
            if rx.changed().await.is_err() {
                return Err(OutboxError::Closed);
            }
        }
    }

    /// Writes everything queued in memory now and waits for the commit.
    pub async fn sync(&self) -> Result<(), OutboxError> {
        let mut rx = self.shared().durable.subscribe();
        let (target, before) = {
            let mut st = lock(&self.shared().state);
            if st.crashed {
                return Err(OutboxError::Closed);
            }
            st.force = true;
            (st.q.next_seq, rx.borrow().failures)
        };
        self.shared().wake();
        loop {
            {
                let d = rx.borrow_and_update();
                if d.upto >= target {
                    return Ok(());
                }
                if d.failures > before {
                    return Err(OutboxError::Storage("commit failed".into()));
                }
            }
            if rx.changed().await.is_err() {
                return Err(OutboxError::Closed);
            }
        }
    }

    /// Current figures.
    pub fn stats(&self) -> OutboxStats {
        let sh = self.shared();
        let st = lock(&sh.state);
        let q = &st.q;
        let mut s = OutboxStats {
            depth: q.depth(),
            bytes: q.total_bytes(),
            oldest_age: None,
            dropped: q.dropped(),
            dropped_max_bytes: q.dropped_bytes,
            dropped_max_age: q.dropped_age,
            in_memory: q.mem.len() as u64,
            memory_bytes: q.mem_bytes,
            on_disk: q.disk_count,
            spilled: q.spilled,
            acked: q.acked,
            full_disk_errors: sh.full_errors.load(Ordering::Relaxed),
            write_errors: sh.write_errors.load(Ordering::Relaxed),
            next_seq: q.next_seq,
            durable_upto: q.durable_upto(),
            degraded: st.degraded,
        };
        let cold = q.cold_count() > 0;
        let mem_oldest = q.mem.front().map(|e| e.msg.ts);
        drop(st);
        let oldest = if cold {
            store::oldest_ts(&lock(&sh.reader))
                .ok()
                .flatten()
                .map(store::from_ms)
        } else {
            mem_oldest
        };
        s.oldest_age = oldest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
        s
    }

    /// Graceful stop: everything not acknowledged is committed to disk.
    pub async fn close(&self) -> Result<(), OutboxError> {
        let sh = self.shared();
        let mut rx = sh.stopped.subscribe();
        lock(&sh.state).closing = true;
        sh.wake();
        let unflushed = loop {
            if let Some(n) = *rx.borrow_and_update() {
                break n;
            }
            if rx.changed().await.is_err() {
                break 0;
            }
        };
        sh.sendable.notify_one();
        // The thread has signalled and is returning: join it so its hold on the file ends now.
        let thread = lock(&self.inner.thread).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        if unflushed > 0 {
            Err(OutboxError::Unflushed(unflushed))
        } else {
            Ok(())
        }
    }

    // ---- consumer side (the upstream) ----

    /// Up to `max` messages to publish next, in seq order, starting after the last one handed
    /// out on this connection. Backlog rows are read from disk a window at a time.
    /// Single consumer.
    pub fn next_batch(&self, max: usize) -> Vec<Message> {
        let sh = self.shared();
        if max == 0 {
            return Vec::new();
        }
        loop {
            // Held from the read to `fill_readahead`: the flusher takes it before forgetting a
            // committed delete, so a row read just before its delete is still recognised.
            let reader = lock(&sh.reader);
            let (from, below) = {
                let mut st = lock(&sh.state);
                if st.crashed {
                    return Vec::new();
                }
                if !st.q.readahead.is_empty() {
                    let out = st.q.take_readahead(max);
                    if !out.is_empty() {
                        return out;
                    }
                }
                if st.q.cursor < st.q.mem_lo() && st.q.cold_count() > 0 {
                    (st.q.cursor, st.q.mem_lo())
                } else {
                    let committed_only = self.committed_only(&st);
                    let out = st.q.take_mem(max, committed_only);
                    st.consumer_idle = out.len() < max;
                    return out;
                }
            };
            let rows = match store::read_window(&reader, from, below, READAHEAD) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: reading the backlog failed; retrying");
                    metrics::counter!("edgebus_outbox_read_errors_total").increment(1);
                    return Vec::new();
                }
            };
            let scanned_to = if rows.len() < READAHEAD {
                below
            } else {
                rows.last().map_or(below, |(m, _)| m.seq + 1)
            };
            lock(&sh.state).q.fill_readahead(rows, scanned_to);
            drop(reader);
        }
    }

    /// Resolves when `next_batch` may have something new. The consumer's own timer guards
    /// against a missed wake-up (one timer for the connection, not one per wait).
    pub async fn sendable(&self) {
        self.shared().sendable.notified().await;
    }

    /// The broker acknowledged `seq` (QoS 0: it was written to the socket): it leaves the
    /// outbox. Unknown seqs (dropped meanwhile) are ignored.
    pub fn ack(&self, seq: u64) {
        let sh = self.shared();
        let (known, to_delete, drained) = {
            let mut st = lock(&sh.state);
            let known = st.q.ack(seq);
            let drained = st.drain_waiting && st.q.mem_bytes <= sh.cfg.memory_limit / 2;
            if drained {
                st.drain_waiting = false;
            }
            (known, !st.q.pending_deletes.is_empty(), drained)
        };
        if known {
            metrics::counter!("edgebus_outbox_acked_total").increment(1);
        }
        if to_delete {
            sh.wake();
        }
        if drained {
            sh.room.notify_waiters();
        }
    }

    /// Acknowledged messages whose row is not deleted on disk yet: after a crash they would be
    /// sent again. The upstream counts them against its in-flight window, so duplicates after
    /// a crash stay within that window.
    /// While the disk refuses writes this is 0, so delivery goes on from memory.
    pub fn uncommitted_acks(&self) -> usize {
        let st = lock(&self.shared().state);
        if st.degraded {
            0
        } else {
            st.q.pending_deletes.len()
        }
    }

    /// A new connection: every unacknowledged message will be handed out again, in order.
    pub fn rewind(&self) {
        lock(&self.shared().state).q.rewind();
        self.shared().sendable.notify_one();
    }

    /// Link state. With `durability: offline`, a down link makes the next commit write
    /// everything held in memory.
    pub fn set_connected(&self, up: bool) {
        let sh = self.shared();
        let was = std::mem::replace(&mut lock(&sh.state).connected, up);
        if was && !up {
            sh.wake();
            // Confirmed pushes waiting for the broker to drain memory go on (to disk).
            sh.room.notify_waiters();
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared().dir
    }

    // ---- test hooks ----

    /// Stops the flusher without writing anything, like a crash (tests).
    #[doc(hidden)]
    pub fn simulate_crash(&self) {
        lock(&self.shared().state).crashed = true;
        self.shared().wake();
        if let Some(t) = lock(&self.inner.thread).take() {
            let _ = t.join();
        }
    }

    /// Caps the file size in pages, to simulate a full disk (tests).
    #[doc(hidden)]
    pub fn set_max_page_count(&self, pages: u64) -> Result<u64, OutboxError> {
        let w = lock(&self.shared().writer);
        let n: i64 = w.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        Ok(n as u64)
    }

    /// Pages used by the file now (tests).
    #[doc(hidden)]
    pub fn page_count(&self) -> Result<u64, OutboxError> {
        let w = lock(&self.shared().writer);
        let n: i64 = w.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

/// Read-only stats straight from the file (for `edgebus buffer stats` while the gateway runs).
pub fn stats_from_file(data_dir: &Path) -> Result<OutboxStats, OutboxError> {
    let (count, bytes, oldest, dropped, reserved) = store::file_stats(data_dir)?;
    Ok(OutboxStats {
        depth: count,
        bytes,
        on_disk: count,
        oldest_age: oldest.map(|ms| {
            SystemTime::now()
                .duration_since(store::from_ms(ms))
                .unwrap_or_default()
        }),
        dropped,
        next_seq: reserved,
        ..Default::default()
    })
}
