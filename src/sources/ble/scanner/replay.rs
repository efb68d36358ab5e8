//! Replays captured adverts from a file: one `MAC RSSI HEX` line per advert, where HEX is
//! the raw advertising data (AD structures). `#` starts a comment. Lets a user test a
//! device map without a radio, and drives the source end to end in tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{ScanError, Scanner};
use crate::sources::ble::advert::{Advert, Mac};

/// Replay files are read whole: keep them to a sane size.
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Longest accepted line (a 1650-byte extended advert in hex, plus MAC and RSSI).
const MAX_LINE: usize = 3400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error("expected `MAC RSSI HEX`")]
    Fields,
    #[error("bad MAC: {0}")]
    Mac(String),
    #[error("bad RSSI `{0}` (expected a number like -67)")]
    Rssi(String),
    #[error("bad hex advertising data")]
    Hex,
    #[error("line longer than {MAX_LINE} characters")]
    TooLong,
    #[error("advertising data: {0}")]
    Advert(String),
}

/// Parses one line; `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<Advert>, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut it = line.split_whitespace();
    let (Some(mac), Some(rssi), Some(hexs), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(LineError::Fields);
    };
    let mac: Mac = mac
        .parse()
        .map_err(|e: crate::sources::ble::advert::MacParseError| LineError::Mac(e.0))?;
    let rssi: i16 = rssi
        .parse()
        .map_err(|_| LineError::Rssi(rssi.chars().take(12).collect()))?;
    let data = hex::decode(hexs).map_err(|_| LineError::Hex)?;
    let (adv, _truncated) = Advert::parse(Some(mac), Some(rssi), &data)
        .map_err(|e| LineError::Advert(e.to_string()))?;
    Ok(Some(adv))
}

pub struct ReplayScanner {
    path: PathBuf,
    interval: Duration,
    looping: bool,
    lines: Vec<String>,
    pos: usize,
    started: bool,
    pending: Option<(Advert, tokio::time::Instant)>,
    pub restarts: u32,
    pub resets: u32,
}

impl ReplayScanner {
    pub fn new(path: &Path, interval: Duration, looping: bool) -> ReplayScanner {
        ReplayScanner {
            path: path.to_path_buf(),
            interval,
            looping,
            lines: Vec::new(),
            pos: 0,
            started: false,
            pending: None,
            restarts: 0,
            resets: 0,
        }
    }

    /// Cancel-safe: the advert and its due time are kept if the caller stops waiting.
    async fn next_inner(&mut self) -> Option<Advert> {
        if self.pending.is_none() {
            let adv = self.read_next()?;
            self.pending = Some((adv, tokio::time::Instant::now() + self.interval));
        }
        if let Some((_, due)) = &self.pending {
            tokio::time::sleep_until(*due).await;
        }
        self.pending.take().map(|(a, _)| a)
    }

    fn read_next(&mut self) -> Option<Advert> {
        loop {
            if self.pos >= self.lines.len() {
                if !self.looping || self.lines.is_empty() {
                    return None;
                }
                self.pos = 0;
            }
            let n = self.pos;
            self.pos += 1;
            match parse_line(&self.lines[n]) {
                Ok(None) => continue,
                Ok(Some(adv)) => return Some(adv),
                Err(e) => {
                    metrics::counter!("edgebus_ble_replay_bad_lines_total").increment(1);
                    tracing::warn!(file = %self.path.display(), line = n + 1, error = %e, "skipping replay line");
                }
            }
        }
    }
}

impl Scanner for ReplayScanner {
    fn start(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        async move {
            let err = |source| ScanError::Replay { path: self.path.display().to_string(), source };
            let size = tokio::fs::metadata(&self.path).await.map_err(err)?.len();
            if size > MAX_FILE {
                return Err(err(std::io::Error::other(format!("{size} bytes; replay files are limited to {MAX_FILE}"))));
            }
            let text = tokio::fs::read_to_string(&self.path).await.map_err(err)?;
            self.lines = text.lines().map(str::to_string).collect();
            self.pos = 0;
            self.started = true;
            tracing::info!(file = %self.path.display(), lines = self.lines.len(), "replaying captured BLE adverts");
            Ok(())
        }
        .boxed()
    }

    fn next_advert(&mut self) -> BoxFuture<'_, Option<Advert>> {
        self.next_inner().boxed()
    }

    fn restart_discovery(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        self.restarts += 1;
        async { Ok(()) }.boxed()
    }

    fn reset_adapter(&mut self) -> BoxFuture<'_, Result<(), ScanError>> {
        self.resets += 1;
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let a = parse_line("A4:C1:38:8D:18:B2 -67 0201060a16d2fc4002ca0903bf13  # living room")
            .unwrap()
            .unwrap();
        assert_eq!(a.rssi, Some(-67));
        assert_eq!(a.mac.unwrap().to_string(), "A4:C1:38:8D:18:B2");
        assert!(a.service_data16(0xfcd2).is_some());
        assert_eq!(parse_line("   # only a comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("A4:C1:38:8D:18:B2 -67"), Err(LineError::Fields));
        assert_eq!(
            parse_line("A4:C1:38:8D:18:B2 -67 02 extra"),
            Err(LineError::Fields)
        );
        assert!(matches!(
            parse_line("nope -67 0201"),
            Err(LineError::Mac(_))
        ));
        assert!(matches!(
            parse_line("A4:C1:38:8D:18:B2 loud 0201"),
            Err(LineError::Rssi(_))
        ));
        assert_eq!(parse_line("A4:C1:38:8D:18:B2 -67 0g"), Err(LineError::Hex));
        assert_eq!(parse_line(&"x".repeat(5000)), Err(LineError::TooLong));
    }

    #[tokio::test]
    async fn replays_skips_bad_lines_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.txt");
        std::fs::write(
            &f,
            "# header\nAA:BB:CC:DD:EE:FF -50 020106\nbroken line\nAA:BB:CC:DD:EE:01 -60 020106\n",
        )
        .unwrap();
        let mut s = ReplayScanner::new(&f, Duration::from_millis(20), true);
        s.start().await.unwrap();
        let t0 = tokio::time::Instant::now();
        let macs: Vec<String> = [
            s.next_advert().await,
            s.next_advert().await,
            s.next_advert().await,
        ]
        .into_iter()
        .map(|a| a.unwrap().mac.unwrap().to_string())
        .collect();
        assert_eq!(
            macs,
            [
                "AA:BB:CC:DD:EE:FF",
                "AA:BB:CC:DD:EE:01",
                "AA:BB:CC:DD:EE:FF"
            ]
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(60),
            "paced by the interval"
        );
        let mut once = ReplayScanner::new(&f, Duration::ZERO, false);
        once.start().await.unwrap();
        assert!(once.next_advert().await.is_some());
        assert!(once.next_advert().await.is_some());
        assert!(once.next_advert().await.is_none());
        let mut missing = ReplayScanner::new(&dir.path().join("nope"), Duration::ZERO, false);
        assert!(matches!(
            missing.start().await,
            Err(ScanError::Replay { .. })
        ));
    }
}
