//! In-memory side of the outbox: pure bookkeeping, no I/O.
//!
//! The queue is ordered by `seq`. Its tail lives in `mem`; rows that are on disk and older than
//! the first entry of `mem` are "cold" and are read back from SQLite a window at a time, so a
//! backlog of millions of messages costs disk, not RAM. Invariant: every disk row with
//! `seq >= mem_lo()` is also in `mem`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::message::Message;

/// Bytes a message counts for in `max_bytes` (topic + payload + a fixed row overhead).
pub fn message_size(m: &Message) -> u64 {
    (m.topic.len() + m.payload.len()) as u64 + ROW_OVERHEAD
}

/// Approximate per-row cost in SQLite (key, columns, page slack).
pub const ROW_OVERHEAD: u64 = 32;

/// What a queued message costs in RAM beyond its topic and payload bytes: the entry itself,
/// two heap blocks and their allocator headers. `memory_limit` is about real memory, so the
/// in-memory count includes it (measured: about 2.5 x `message_size` for small readings).
pub const MEM_OVERHEAD: u64 = 160;

fn mem_cost(size: u64) -> u64 {
    size + MEM_OVERHEAD
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub msg: Message,
    pub size: u64,
    pub on_disk: bool,
    pub accepted: Instant,
}

/// Why a message was dropped without acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    MaxBytes,
    MaxAge,
}

#[derive(Debug, Default)]
pub struct Queue {
    pub mem: VecDeque<Entry>,
    /// Bytes of every entry in `mem` (RAM use).
    pub mem_bytes: u64,
    /// Entries of `mem` not yet on disk, and their bytes.
    pub unstored_count: u64,
    pub unstored_bytes: u64,
    /// Entries of `mem` that are on disk.
    pub mem_disk_count: u64,
    /// Rows on disk that are still queued (neither acknowledged nor dropped).
    pub disk_count: u64,
    pub disk_bytes: u64,
    pub next_seq: u64,
    /// Seqs below this are durably reserved (never reused after a restart).
    pub reserved: u64,
    /// Next seq to hand to the upstream on this connection.
    pub cursor: u64,
    /// Cold rows handed out and awaiting acknowledgement: seq -> size.
    pub handed_cold: BTreeMap<u64, u64>,
    /// Disk rows acknowledged or dropped whose DELETE is not committed yet.
    pub pending_deletes: BTreeSet<u64>,
    /// Seqs of the commit in progress (sorted): acknowledging one of them must schedule a
    /// delete at once, or a backlog read could see the fresh row and hand it out again.
    pub writing: Vec<u64>,
    /// Backlog rows read from disk, not yet handed out (seq order), and the end of the read.
    pub readahead: VecDeque<(Message, u64)>,
    pub readahead_end: u64,
    /// Every queued seq at or below this was dropped (eviction is always oldest first).
    pub evicted_through: u64,
    pub dropped_bytes: u64,
    pub dropped_age: u64,
    /// `dropped_*` already persisted in the meta table at open.
    pub dropped_base: u64,
    pub acked: u64,
    pub spilled: u64,
}

impl Queue {
    pub fn total_bytes(&self) -> u64 {
        self.disk_bytes + self.unstored_bytes
    }

    pub fn depth(&self) -> u64 {
        self.disk_count + self.unstored_count
    }

    pub fn cold_count(&self) -> u64 {
        self.disk_count - self.mem_disk_count
    }

    /// Lowest seq held in memory (or the next seq when memory is empty).
    pub fn mem_lo(&self) -> u64 {
        self.mem.front().map_or(self.next_seq, |e| e.msg.seq)
    }

    /// All seqs below this are durable, acknowledged or dropped.
    ///
    /// Commits write a prefix of the unwritten entries (everything, or those accepted before a
    /// time, and acceptance follows seq order), so in memory the written entries come first:
    /// a binary search finds the first unwritten one. It runs on every commit, and under load
    /// the queue holds tens of thousands of entries.
    pub fn durable_upto(&self) -> u64 {
        let i = self.mem.partition_point(|e| e.on_disk);
        self.mem.get(i).map_or(self.next_seq, |e| e.msg.seq)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_base + self.dropped_bytes + self.dropped_age
    }

    fn find(&self, seq: u64) -> Option<usize> {
        let i = self.seq_index(seq);
        (self.mem.get(i)?.msg.seq == seq).then_some(i)
    }

    /// Index of the first entry with a seq at or above `seq`. Seqs in memory are increasing
    /// and mostly without gaps (acknowledgements come in order), so `seq - front` is checked
    /// first; a binary search is the fallback. Both run for every message under load.
    fn seq_index(&self, seq: u64) -> usize {
        let Some(front) = self.mem.front() else {
            return 0;
        };
        if seq <= front.msg.seq {
            return 0;
        }
        // Without gaps `seq` sits at `seq - front`; gaps only move it nearer the front.
        let guess = usize::try_from(seq - front.msg.seq)
            .unwrap_or(usize::MAX)
            .min(self.mem.len());
        let below = |i: usize| self.mem.get(i).is_some_and(|e| e.msg.seq < seq);
        if below(guess - 1) && !below(guess) {
            return guess;
        }
        self.mem.partition_point(|e| e.msg.seq < seq)
    }

    /// Appends a message and assigns its seq.
    pub fn push(&mut self, mut msg: Message, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        msg.seq = seq;
        let size = message_size(&msg);
        self.mem_bytes += mem_cost(size);
        self.unstored_bytes += size;
        self.unstored_count += 1;
        self.mem.push_back(Entry {
            msg,
            size,
            on_disk: false,
            accepted: now,
        });
        seq
    }

    /// Removes a memory entry, keeping the counters right. Returns it.
    fn remove_at(&mut self, i: usize) -> Option<Entry> {
        let e = self.mem.remove(i)?;
        self.mem_bytes -= mem_cost(e.size);
        if e.on_disk {
            self.mem_disk_count -= 1;
            self.disk_count -= 1;
            self.disk_bytes -= e.size;
            self.pending_deletes.insert(e.msg.seq);
        } else {
            self.unstored_count -= 1;
            self.unstored_bytes -= e.size;
            if self.writing.binary_search(&e.msg.seq).is_ok() {
                self.pending_deletes.insert(e.msg.seq);
            }
        }
        Some(e)
    }

    /// The broker acknowledged `seq` (or, for QoS 0, it was written to the socket).
    /// Returns false for an unknown seq (already dropped, or from an old connection).
    pub fn ack(&mut self, seq: u64) -> bool {
        if let Some(i) = self.find(seq) {
            self.remove_at(i);
            self.acked += 1;
            true
        } else if let Some(size) = self.handed_cold.remove(&seq) {
            self.disk_count -= 1;
            self.disk_bytes -= size;
            self.pending_deletes.insert(seq);
            self.acked += 1;
            true
        } else {
            false
        }
    }

    /// A new connection: everything unacknowledged is to be sent again, in seq order.
    pub fn rewind(&mut self) {
        self.cursor = 0;
        self.handed_cold.clear();
        self.readahead.clear();
        self.readahead_end = 0;
    }

    /// Hands out up to `max` memory entries at or after the cursor. With `committed_only`,
    /// stops at the first entry not on disk (`durability: always`).
    pub fn take_mem(&mut self, max: usize, committed_only: bool) -> Vec<Message> {
        let start = self.seq_index(self.cursor);
        let mut out = Vec::new();
        for e in self.mem.iter().skip(start) {
            if out.len() >= max || (committed_only && !e.on_disk) {
                break;
            }
            out.push(e.msg.clone());
        }
        if let Some(last) = out.last() {
            self.cursor = last.seq + 1;
        }
        out
    }

    /// Cold rows read from disk (seq order, all >= cursor) are kept as read-ahead; rows
    /// dropped or acknowledged meanwhile are skipped. `scanned_to` is one past the last seq
    /// the read covered. Called with the reader lock held (see `Outbox::next_batch`).
    pub fn fill_readahead(&mut self, rows: Vec<(Message, u64)>, scanned_to: u64) {
        for (m, size) in rows {
            if m.seq <= self.evicted_through && self.evicted_through != 0
                || self.pending_deletes.contains(&m.seq)
                || m.seq < self.cursor
            {
                continue;
            }
            self.readahead.push_back((m, size));
        }
        self.readahead_end = self.readahead_end.max(scanned_to);
        if self.readahead.is_empty() {
            self.cursor = self.cursor.max(self.readahead_end);
        }
    }

    /// Hands out up to `max` read-ahead rows (skipping any dropped since they were read).
    pub fn take_readahead(&mut self, max: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((m, size)) = self.readahead.pop_front() else {
                break;
            };
            if m.seq <= self.evicted_through && self.evicted_through != 0 {
                continue;
            }
            self.handed_cold.insert(m.seq, size);
            self.cursor = m.seq + 1;
            out.push(m);
        }
        if self.readahead.is_empty() {
            self.cursor = self.cursor.max(self.readahead_end);
        }
        out
    }

    /// Test helper: read-ahead then hand out.
    #[cfg(test)]
    pub fn accept_cold(&mut self, rows: Vec<(Message, u64)>, scanned_to: u64) -> Vec<Message> {
        self.fill_readahead(rows, scanned_to);
        self.take_readahead(usize::MAX)
    }

    /// Messages the next commit should write. `all`: everything not yet on disk; otherwise
    /// only those accepted before `spill_before` (offline durability, link up).
    pub fn to_write(&self, all: bool, spill_before: Instant) -> Vec<Message> {
        let first = self.mem.partition_point(|e| e.on_disk);
        self.mem
            .iter()
            .skip(first)
            .take_while(|e| all || e.accepted <= spill_before)
            .map(|e| e.msg.clone())
            .collect()
    }

    /// After a successful commit of `seqs`: mark them on disk. A seq that left memory meanwhile
    /// (acknowledged or dropped) is now a stray row: schedule its delete.
    pub fn mark_written(&mut self, seqs: &[u64]) {
        self.writing.clear();
        for &seq in seqs {
            match self.find(seq) {
                Some(i) => {
                    let e = &mut self.mem[i];
                    if !e.on_disk {
                        e.on_disk = true;
                        let size = e.size;
                        self.unstored_count -= 1;
                        self.unstored_bytes -= size;
                        self.mem_disk_count += 1;
                        self.disk_count += 1;
                        self.disk_bytes += size;
                        self.spilled += 1;
                    }
                }
                None => {
                    self.pending_deletes.insert(seq);
                }
            }
        }
    }

    /// Drops the oldest memory entry (only valid when no cold rows exist).
    pub fn drop_mem_front(&mut self, reason: DropReason) -> Option<Entry> {
        let e = self.remove_at(0)?;
        self.count_drop(e.msg.seq, reason);
        Some(e)
    }

    /// A cold row was deleted by eviction.
    pub fn dropped_cold(&mut self, seq: u64, size: u64, reason: DropReason) {
        self.disk_count -= 1;
        self.disk_bytes -= size;
        self.handed_cold.remove(&seq);
        self.count_drop(seq, reason);
    }

    fn count_drop(&mut self, seq: u64, reason: DropReason) {
        self.evicted_through = self.evicted_through.max(seq);
        match reason {
            DropReason::MaxBytes => self.dropped_bytes += 1,
            DropReason::MaxAge => self.dropped_age += 1,
        }
    }

    /// Moves committed entries from the front of memory to the cold region until memory use
    /// is within `limit`. Stops at the first entry that is not on disk.
    pub fn trim_memory(&mut self, limit: u64) {
        while self.mem_bytes > limit {
            match self.mem.front() {
                Some(e) if e.on_disk => {}
                _ => break,
            }
            let Some(e) = self.mem.pop_front() else { break };
            self.mem_bytes -= mem_cost(e.size);
            self.mem_disk_count -= 1;
            if e.msg.seq < self.cursor {
                self.handed_cold.insert(e.msg.seq, e.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::QoS;

    fn msg(topic: &str) -> Message {
        Message::new(topic, vec![0u8; 8], QoS::AtLeastOnce, false)
    }

    fn q() -> Queue {
        Queue {
            next_seq: 1,
            ..Default::default()
        }
    }

    #[test]
    fn push_assigns_increasing_seqs_and_counts_bytes() {
        let mut q = q();
        let now = Instant::now();
        assert_eq!(q.push(msg("a"), now), 1);
        assert_eq!(q.push(msg("bb"), now), 2);
        assert_eq!(q.depth(), 2);
        assert_eq!(q.total_bytes(), 1 + 8 + 32 + 2 + 8 + 32);
        assert_eq!(q.durable_upto(), 1);
    }

    #[test]
    fn take_ack_rewind() {
        let mut q = q();
        let now = Instant::now();
        for _ in 0..5 {
            q.push(msg("t"), now);
        }
        let a = q.take_mem(2, false);
        assert_eq!(a.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
        let b = q.take_mem(10, false);
        assert_eq!(b.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(q.ack(2));
        assert!(!q.ack(2), "second ack of the same seq is ignored");
        q.rewind();
        let c = q.take_mem(10, false);
        assert_eq!(
            c.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 3, 4, 5]
        );
        assert_eq!(q.depth(), 4);
    }

    #[test]
    fn committed_only_waits_for_disk() {
        let mut q = q();
        let now = Instant::now();
        q.push(msg("t"), now);
        q.push(msg("t"), now);
        assert!(q.take_mem(10, true).is_empty());
        q.mark_written(&[1]);
        assert_eq!(q.take_mem(10, true).len(), 1);
        assert_eq!(q.durable_upto(), 2);
        assert_eq!(q.disk_count, 1);
        assert_eq!(q.unstored_count, 1);
    }

    #[test]
    fn ack_during_write_leaves_a_stray_row_to_delete() {
        let mut q = q();
        let now = Instant::now();
        q.push(msg("t"), now);
        let w = q.to_write(true, now);
        assert_eq!(w.len(), 1);
        q.take_mem(1, false);
        assert!(q.ack(1));
        q.mark_written(&[1]);
        assert!(q.pending_deletes.contains(&1));
        assert_eq!(q.depth(), 0);
        assert_eq!(q.disk_count, 0);
    }

    #[test]
    fn trim_moves_committed_front_to_cold_and_acks_still_count() {
        let mut q = q();
        let now = Instant::now();
        for _ in 0..4 {
            q.push(msg("t"), now);
        }
        q.mark_written(&[1, 2, 3]);
        q.take_mem(2, true); // 1, 2 handed out
        q.trim_memory(0);
        assert_eq!(q.mem.len(), 1, "entry 4 is not on disk and stays");
        assert_eq!(q.mem_lo(), 4);
        assert_eq!(q.cold_count(), 3);
        assert!(q.ack(1));
        assert!(!q.ack(3), "3 was never handed out");
        assert_eq!(q.depth(), 3);
        assert_eq!(q.disk_count, 2);
    }

    #[test]
    fn eviction_is_counted_and_blocks_stale_cold_rows() {
        let mut q = q();
        let now = Instant::now();
        for _ in 0..3 {
            q.push(msg("t"), now);
        }
        let e = q.drop_mem_front(DropReason::MaxBytes).map(|e| e.msg.seq);
        assert_eq!(e, Some(1));
        assert_eq!(q.dropped(), 1);
        let mut old = msg("t");
        old.seq = 1;
        let stale = q.accept_cold(vec![(old, 41)], 2);
        assert!(
            stale.is_empty(),
            "a row read before its eviction is not handed out"
        );
    }

    proptest::proptest! {
        /// Whatever the order of pushes, commits (all or by age), acks, evictions and trims,
        /// written entries stay in front of unwritten ones, so the binary searches in
        /// `durable_upto` and `to_write` agree with a full scan; the guessed index of a seq
        /// agrees with a binary search, gaps or not.
        #[test]
        fn written_entries_stay_in_front(ops in proptest::collection::vec((0u8..6, 0u64..40), 1..200)) {
            let mut q = q();
            let t0 = Instant::now();
            let mut clock = 0u64;
            for (op, arg) in ops {
                let now = t0 + std::time::Duration::from_millis(clock);
                match op {
                    0 | 1 => {
                        clock += 1;
                        q.push(msg("t"), now);
                    }
                    2 => {
                        let all = arg % 2 == 0;
                        let before = t0 + std::time::Duration::from_millis(clock.saturating_sub(arg));
                        let rows: Vec<u64> = q.to_write(all, before).iter().map(|m| m.seq).collect();
                        let scan: Vec<u64> = q
                            .mem
                            .iter()
                            .filter(|e| !e.on_disk && (all || e.accepted <= before))
                            .map(|e| e.msg.seq)
                            .collect();
                        proptest::prop_assert_eq!(&rows, &scan);
                        q.mark_written(&rows);
                    }
                    3 => {
                        q.take_mem(arg as usize, false);
                        // Mostly the oldest, sometimes one further on: gaps.
                        q.ack(q.mem_lo() + arg % 4);
                    }
                    4 => {
                        q.drop_mem_front(DropReason::MaxBytes);
                    }
                    _ => q.trim_memory(arg * 100),
                }
                let scan = q.mem.iter().find(|e| !e.on_disk).map_or(q.next_seq, |e| e.msg.seq);
                proptest::prop_assert_eq!(q.durable_upto(), scan);
                for probe in [0, q.mem_lo(), q.mem_lo() + arg, q.cursor, q.next_seq, q.next_seq + 1] {
                    let expected = q.mem.partition_point(|e| e.msg.seq < probe);
                    proptest::prop_assert_eq!(q.seq_index(probe), expected, "probe {}", probe);
                }
            }
        }
    }
}
