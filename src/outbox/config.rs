//! The `buffer:` section of the device map.

use std::time::Duration;

use serde::Deserialize;

use crate::config::units::{bytesize, duration};

/// When messages reach the SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Spares SD cards: while the broker link is up, messages go from memory to the broker and
    /// are only written when the link is down, when they stay unacknowledged longer than
    /// `spill_after`, when memory fills, or at shutdown.
    #[default]
    Offline,
    /// Every message is committed (grouped transactions) before it is published.
    Always,
}

/// `buffer:` — the store-and-forward outbox.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub durability: Durability,
    /// Upper bound of everything buffered (memory + disk); the oldest go first beyond it.
    #[serde(with = "bytesize")]
    pub max_bytes: u64,
    /// Messages older than this (by their timestamp) are dropped, oldest first.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// `offline` durability: a message unacknowledged for this long is written to disk.
    #[serde(with = "duration")]
    pub spill_after: Duration,
    /// How often pending writes are grouped into one transaction.
    /// Default: 1s (`offline`), 50ms (`always`, at most 100ms).
    #[serde(with = "duration::option")]
    pub commit_interval: Option<Duration>,
    /// RAM kept for queued messages; beyond it they live on disk only.
    #[serde(with = "bytesize")]
    pub memory_limit: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            durability: Durability::Offline,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 86400),
            spill_after: Duration::from_secs(5),
            commit_interval: None,
            memory_limit: 4 * 1024 * 1024,
        }
    }
}

impl BufferConfig {
    /// The commit interval in effect.
    pub fn commit_interval(&self) -> Duration {
        self.commit_interval.unwrap_or(match self.durability {
            Durability::Offline => Duration::from_secs(1),
            Durability::Always => Duration::from_millis(50),
        })
    }

    /// Semantic checks: (path suffix, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.max_bytes < 64 * 1024 {
            out.push(("max_bytes".into(), "must be at least 64KiB".into()));
        }
        if self.memory_limit < 64 * 1024 {
            out.push(("memory_limit".into(), "must be at least 64KiB".into()));
        }
        if self.max_age < Duration::from_secs(1) {
            out.push(("max_age".into(), "must be at least 1s".into()));
        }
        if self.spill_after.is_zero() {
            out.push(("spill_after".into(), "must be greater than 0".into()));
        }
        let ci = self.commit_interval();
        if ci < Duration::from_millis(1) || ci > Duration::from_secs(60) {
            out.push((
                "commit_interval".into(),
                "must be between 1ms and 60s".into(),
            ));
        } else if self.durability == Durability::Always && ci > Duration::from_millis(100) {
            out.push((
                "commit_interval".into(),
                "must be at most 100ms with `durability: always`".into(),
            ));
        }
        out
    }
}
