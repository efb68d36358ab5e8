//! The background thread that groups writes into one transaction per commit interval and
//! enforces the limits (`max_bytes`, `max_age`, memory).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Instant, SystemTime};

use super::queue::DropReason;
use super::store::{self, SEQ_BLOCK};
use super::{Durability, Shared, lock};

pub(super) fn run(sh: Arc<Shared>, wake: Receiver<()>) {
    let interval = sh.cfg.commit_interval();
    let mut last_limits = Instant::now();
    let mut last_rows = Instant::now();
    let mut freed_since_trim = 0u64;
    loop {
        // Sleep until the next commit is due, or until woken (acknowledgements to delete,
        // memory pressure, link down, sync, close).
        let wait = interval.saturating_sub(last_rows.elapsed());
        let woken = if wait.is_zero() {
            Ok(())
        } else {
            wake.recv_timeout(wait)
        };
        let (crashed, closing) = {
            let st = lock(&sh.state);
            (st.crashed, st.closing)
        };
        if crashed {
            let _ = sh.stopped.send(Some(0));
            return;
        }
        let closing = closing || woken == Err(RecvTimeoutError::Disconnected);
        let due = last_rows.elapsed() >= interval;
        if cycle(&sh, closing, due) {
            last_rows = Instant::now();
        }
        if closing || last_limits.elapsed() >= interval {
            enforce_limits(&sh);
            last_limits = Instant::now();
        }
        let freed = {
            let mut st = lock(&sh.state);
            // While the link is down nothing is about to be sent: committed messages wait
            // on disk only (the backlog is read back a window at a time on reconnect), so an
            // outage of any length costs disk, not RAM.
            let limit = if st.connected { sh.cfg.memory_limit } else { 0 };
            let before = st.q.mem_bytes;
            st.q.trim_memory(limit);
            before.saturating_sub(st.q.mem_bytes)
        };
        give_back_memory(freed, &mut freed_since_trim);
        sh.room.notify_waiters();
        if closing {
            let unflushed = lock(&sh.state).q.unstored_count;
            if unflushed > 0 {
                tracing::error!(
                    messages = unflushed,
                    "outbox: could not write every message at shutdown; they are lost"
                );
            }
            let _ = sh.stopped.send(Some(unflushed));
            return;
        }
    }
}

/// One grouped transaction: rows due for disk, acknowledged deletes, counters. Rows are
/// written when `due` (once per commit interval) or when something cannot wait; deletes of
/// acknowledged rows go at once, so few acknowledged messages can come back after a crash.
/// Returns whether rows were considered (the interval restarts).
fn cycle(sh: &Shared, closing: bool, due: bool) -> bool {
    let now = Instant::now();
    let always = sh.cfg.durability == Durability::Always;
    let (rows, deletes, meta, new_reserved, rows_considered) = {
        let mut st = lock(&sh.state);
        let urgent = closing
            || st.force
            || st.q.mem_bytes > sh.cfg.memory_limit
            || (always && st.q.unstored_count >= 8192);
        let all = urgent || (due && (always || !st.connected));
        st.force = false;
        let spill_before = now.checked_sub(sh.cfg.spill_after).unwrap_or(now);
        let rows = if all || due {
            st.q.to_write(all, spill_before)
        } else {
            Vec::new()
        };
        st.q.writing = rows.iter().map(|m| m.seq).collect();
        // Kept in `pending_deletes` until committed, so a concurrent backlog read skips them.
        let deletes: Vec<u64> = st.q.pending_deletes.iter().copied().collect();
        let mut meta = Vec::new();
        let mut new_reserved = None;
        if st.q.next_seq + SEQ_BLOCK / 2 > st.q.reserved {
            let r = st.q.next_seq + SEQ_BLOCK;
            meta.push(("seq_reserved", r));
            new_reserved = Some(r);
        }
        if !rows.is_empty() || !deletes.is_empty() {
            meta.push(("dropped_total", st.q.dropped()));
        }
        (rows, deletes, meta, new_reserved, all || due)
    };
    if rows.is_empty() && deletes.is_empty() && meta.is_empty() {
        // Nothing to write; still tell waiters where durability stands (e.g. all acked).
        publish_durable(sh);
        return rows_considered;
    }
    // New rows must survive a power cut (fsync); a delete-only commit need not: losing it
    // means a duplicate, never a loss.
    let full_sync = !rows.is_empty();
    let res = store::commit(&mut lock(&sh.writer), &rows, &deletes, &meta, full_sync);
    // Lock order: reader, state, writer (see `Outbox::next_batch`).
    let reader = lock(&sh.reader);
    let mut st = lock(&sh.state);
    match res {
        Ok(()) => {
            let seqs: Vec<u64> = rows.iter().map(|m| m.seq).collect();
            for seq in &deletes {
                st.q.pending_deletes.remove(seq);
            }
            st.q.mark_written(&seqs);
            if let Some(r) = new_reserved {
                st.q.reserved = r;
            }
            if st.degraded {
                tracing::warn!("outbox: writing works again");
            }
            st.degraded = false;
            let upto = st.q.durable_upto();
            drop(st);
            drop(reader);
            if !rows.is_empty() {
                metrics::counter!("edgebus_outbox_spilled_total").increment(rows.len() as u64);
            }
            sh.durable.send_modify(|d| d.upto = upto);
            if (always && !rows.is_empty()) || !deletes.is_empty() {
                sh.sendable.notify_one();
            }
        }
        Err(e) => {
            st.q.writing.clear();
            let first = !st.degraded;
            st.degraded = true;
            drop(st);
            drop(reader);
            if store::is_full(&e) {
                sh.full_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("edgebus_outbox_full_disk_errors_total").increment(1);
            } else {
                sh.write_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("edgebus_outbox_write_errors_total").increment(1);
            }
            if first {
                tracing::error!(
                    error = %e,
                    pending = rows.len(),
                    "outbox: commit failed; messages are kept in memory and writing is retried"
                );
            }
            sh.durable.send_modify(|d| d.failures += 1);
            // Degraded `always` mode publishes from memory rather than stalling.
            if always {
                sh.sendable.notify_one();
            }
        }
    }
    rows_considered
}

fn publish_durable(sh: &Shared) {
    let upto = lock(&sh.state).q.durable_upto();
    sh.durable.send_if_modified(|d| {
        let changed = d.upto != upto;
        d.upto = upto;
        changed
    });
}

/// Drops the oldest messages beyond `max_bytes` or older than `max_age`, counted exactly.
/// Runs under the state lock so acknowledgements cannot race the accounting.
fn enforce_limits(sh: &Shared) {
    let cutoff_ms = SystemTime::now()
        .checked_sub(sh.cfg.max_age)
        .map_or(i64::MIN, store::to_ms);
    let _reader = lock(&sh.reader);
    let mut st = lock(&sh.state);
    let max_bytes = sh.cfg.max_bytes;
    // Cold rows first: they are the oldest.
    while st.q.cold_count() > 0 {
        let below = st.q.mem_lo();
        let mut w = lock(&sh.writer);
        let rows = match store::oldest(&w, below, 512) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: reading the oldest rows failed");
                break;
            }
        };
        let mut excess = st.q.total_bytes().saturating_sub(max_bytes);
        let mut victims = Vec::new();
        for &(seq, size, ts) in &rows {
            if st.q.pending_deletes.contains(&seq) {
                continue; // acknowledged already: not a drop
            }
            if excess > 0 {
                excess = excess.saturating_sub(size);
                victims.push((seq, size, DropReason::MaxBytes));
            } else if ts < cutoff_ms {
                victims.push((seq, size, DropReason::MaxAge));
            } else {
                break;
            }
        }
        let Some(&(through, _, _)) = victims.last() else {
            break;
        };
        let acked: Vec<u64> = st.q.pending_deletes.range(..=through).copied().collect();
        let dropped_after = st.q.dropped() + victims.len() as u64;
        match store::delete_through(
            &mut w,
            through,
            below,
            &acked,
            &[("dropped_total", dropped_after)],
        ) {
            Ok(()) => {
                for seq in &acked {
                    st.q.pending_deletes.remove(seq);
                }
                for &(seq, size, reason) in &victims {
                    st.q.dropped_cold(seq, size, reason);
                }
                let n = victims.len() as u64;
                tracing::warn!(
                    messages = n,
                    "outbox: limit reached, dropped the oldest messages"
                );
                metrics::counter!("edgebus_outbox_dropped_total", "reason" => "limit").increment(n);
            }
            Err(e) => {
                if store::is_full(&e) {
                    sh.full_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    sh.write_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, "outbox: dropping the oldest rows failed");
                break;
            }
        }
        if rows.len() < 512 && victims.len() < rows.len() {
            break;
        }
    }
    // Then memory, once nothing older is on disk.
    while st.q.cold_count() == 0 {
        let over = st.q.total_bytes() > max_bytes;
        let old =
            st.q.mem
                .front()
                .is_some_and(|e| store::to_ms(e.msg.ts) < cutoff_ms);
        if !over && !old {
            break;
        }
        let reason = if over {
            DropReason::MaxBytes
        } else {
            DropReason::MaxAge
        };
        if st.q.drop_mem_front(reason).is_none() {
            break;
        }
        metrics::counter!("edgebus_outbox_dropped_total", "reason" => "limit").increment(1);
    }
}

/// After a burst (producers outran the disk, or a drain), the allocator keeps the freed
/// blocks; on a small device that shows as RSS that never comes down. Hand them back once a
/// megabyte or more was freed.
fn give_back_memory(freed: u64, since_trim: &mut u64) {
    *since_trim += freed;
    if *since_trim < 1 << 20 {
        return;
    }
    *since_trim = 0;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
