//! SQLite side of the outbox: schema, open (with quarantine of a corrupt file), batched writes,
//! windowed reads and oldest-first eviction.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::OutboxError;
use crate::message::{Message, QoS};

pub const FILE_NAME: &str = "outbox.db";

/// Seqs are reserved on disk in blocks this large, so a restart never reuses one.
pub const SEQ_BLOCK: u64 = 1 << 24;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// What an opened file holds.
#[derive(Debug, Default)]
pub struct OpenInfo {
    pub count: u64,
    pub bytes: u64,
    /// First seq that may be assigned.
    pub next_seq: u64,
    pub dropped: u64,
    pub quarantined: Option<PathBuf>,
}

pub fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

pub fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull))
}

pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL in WAL mode: one fsync per commit (grouped), so a power cut loses at most the last
    // commit interval.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Appends touch the last pages only and reads are sequential: 1 MiB of page cache does
    // the work of SQLite's default 2 MiB, and the backlog's size does not show up in RSS.
    conn.pragma_update(None, "cache_size", -1024)?;
    Ok(())
}

fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn meta_set(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value as i64],
    )?;
    Ok(())
}

/// Opens and checks the file; errors that mean "this file is damaged" are told apart.
fn try_open(path: &Path) -> Result<(Connection, OpenInfo), rusqlite::Error> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    conn.execute_batch(SCHEMA)?;
    let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        ));
    }
    let (count, bytes, max_seq): (i64, i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(seq) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let reserved = meta_get(&conn, "seq_reserved")?.unwrap_or(1).max(1) as u64;
    let next_seq = reserved.max(max_seq.unwrap_or(0) as u64 + 1);
    let dropped = meta_get(&conn, "dropped_total")?.unwrap_or(0).max(0) as u64;
    // Reserve the next block before anything is assigned.
    meta_set(&conn, "seq_reserved", next_seq + SEQ_BLOCK)?;
    Ok((
        conn,
        OpenInfo {
            count: count as u64,
            bytes: bytes as u64,
            next_seq,
            dropped,
            quarantined: None,
        },
    ))
}

fn quarantine(path: &Path) -> std::io::Result<PathBuf> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut target = path.with_file_name(format!("{FILE_NAME}.corrupt-{ts}"));
    let mut n = 1;
    while target.exists() {
        target = path.with_file_name(format!("{FILE_NAME}.corrupt-{ts}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &target)?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", path.display()));
        if side.exists() {
            let dest = PathBuf::from(format!("{}{ext}", target.display()));
            std::fs::rename(&side, &dest)?;
        }
    }
    Ok(target)
}

/// Opens `<dir>/outbox.db`; a damaged file is moved aside and a fresh one started.
pub fn open(dir: &Path) -> Result<(Connection, OpenInfo), OutboxError> {
    std::fs::create_dir_all(dir).map_err(|e| OutboxError::Io(dir.to_path_buf(), e))?;
    let path = dir.join(FILE_NAME);
    match try_open(&path) {
        Ok(v) => Ok(v),
        Err(e) if is_corruption(&e) => {
            let moved = quarantine(&path).map_err(|io| OutboxError::Io(path.clone(), io))?;
            tracing::error!(
                file = %path.display(),
                moved_to = %moved.display(),
                error = %e,
                "OUTBOX FILE IS CORRUPT: moved aside, starting a fresh outbox; \
                 messages in the old file are not replayed"
            );
            metrics::counter!("edgebus_outbox_quarantined_total").increment(1);
            let (conn, mut info) = try_open(&path)?;
            info.quarantined = Some(moved);
            Ok((conn, info))
        }
        Err(e) => Err(e.into()),
    }
}

/// A second connection for reading cold rows while the writer commits.
pub fn open_reader(dir: &Path) -> Result<Connection, OutboxError> {
    let conn = Connection::open_with_flags(
        dir.join(FILE_NAME),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -256)?;
    Ok(conn)
}

/// One grouped transaction: new rows, deletes, counters.
pub fn commit(
    conn: &mut Connection,
    rows: &[Message],
    deletes: &[u64],
    meta: &[(&str, u64)],
    full_sync: bool,
) -> rusqlite::Result<()> {
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO outbox(seq, topic, payload, qos, retain, ts_ms, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for m in rows {
            ins.execute(params![
                m.seq as i64,
                m.topic,
                &m.payload[..],
                m.qos.as_u8(),
                m.retain,
                to_ms(m.ts),
                super::queue::message_size(m) as i64,
            ])?;
        }
        let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for &seq in deletes {
            del.execute([seq as i64])?;
        }
        for (k, v) in meta {
            meta_set(&tx, k, *v)?;
        }
    }
    tx.commit()
}

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Message, u64)> {
    let seq: i64 = r.get(0)?;
    let topic: String = r.get(1)?;
    let payload: Vec<u8> = r.get(2)?;
    let qos: u8 = r.get(3)?;
    let retain: bool = r.get(4)?;
    let ts: i64 = r.get(5)?;
    let size: i64 = r.get(6)?;
    Ok((
        Message {
            seq: seq as u64,
            topic,
            payload: Bytes::from(payload),
            qos: QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce),
            retain,
            ts: from_ms(ts),
        },
        size.max(0) as u64,
    ))
}

/// Up to `limit` rows with `from <= seq < below`, in seq order.
pub fn read_window(
    conn: &Connection,
    from: u64,
    below: u64,
    limit: usize,
) -> rusqlite::Result<Vec<(Message, u64)>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, topic, payload, qos, retain, ts_ms, size FROM outbox
         WHERE seq >= ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = st.query_map(
        params![from as i64, below.min(i64::MAX as u64) as i64, limit as i64],
        row_to_message,
    )?;
    rows.collect()
}

/// Oldest rows below `below`: (seq, size, ts_ms), seq order.
pub fn oldest(
    conn: &Connection,
    below: u64,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, u64, i64)>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, size, ts_ms FROM outbox WHERE seq < ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st.query_map(
        params![below.min(i64::MAX as u64) as i64, limit as i64],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get(2)?,
            ))
        },
    )?;
    rows.collect()
}

/// Deletes rows with seq <= `through` and seq < `below`, plus the given acknowledged seqs.
pub fn delete_through(
    conn: &mut Connection,
    through: u64,
    below: u64,
    acked: &[u64],
    meta: &[(&str, u64)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM outbox WHERE seq <= ?1 AND seq < ?2",
        params![through as i64, below.min(i64::MAX as u64) as i64],
    )?;
    {
        let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for &seq in acked {
            del.execute([seq as i64])?;
        }
        for (k, v) in meta {
            meta_set(&tx, k, *v)?;
        }
    }
    tx.commit()
}

pub fn oldest_ts(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT ts_ms FROM outbox ORDER BY seq LIMIT 1", [], |r| {
        r.get(0)
    })
    .optional()
}

/// Read-only figures for `edgebus buffer stats` while the gateway runs.
pub fn file_stats(dir: &Path) -> Result<(u64, u64, Option<i64>, u64, u64), OutboxError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Err(OutboxError::Missing(path));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let (count, bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest = oldest_ts(&conn)?;
    let dropped = meta_get(&conn, "dropped_total")?.unwrap_or(0).max(0) as u64;
    let reserved = meta_get(&conn, "seq_reserved")?.unwrap_or(0).max(0) as u64;
    Ok((count as u64, bytes as u64, oldest, dropped, reserved))
}
