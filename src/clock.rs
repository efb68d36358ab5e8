//! Is the wall clock trustworthy? A Raspberry Pi has no real-time clock: it boots at 1970 or
//! at the time `fake-hwclock` saved at shutdown, and only NTP makes it right. Readings taken
//! before that are flagged (`"clock": "unsynced"` in JSON payloads) instead of being published
//! as if their timestamps were true.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

/// No reading can truly be older than this (2026-01-01T00:00:00Z).
pub const MIN_PLAUSIBLE_UNIX: u64 = 1_767_225_600;

/// How the gateway decides whether timestamps can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockPolicy {
    /// Trust the clock once the kernel reports it synchronised (NTP, chrony,
    /// systemd-timesyncd); before that, flag. Timestamps before 2026 are always flagged.
    #[default]
    Kernel,
    /// Only flag timestamps that are impossibly old (before 2026), e.g. on a VM whose clock
    /// the host keeps right without NTP in the guest.
    Plausible,
    /// Never flag.
    Off,
}

/// Caches the kernel's answer for a few seconds and latches once it said "synchronised".
#[derive(Debug)]
pub struct ClockCheck {
    policy: ClockPolicy,
    state: Mutex<(bool, Option<Instant>)>,
}

impl ClockCheck {
    pub fn new(policy: ClockPolicy) -> ClockCheck {
        ClockCheck {
            policy,
            state: Mutex::new((false, None)),
        }
    }

    /// Whether a reading stamped `ts` has a trustworthy timestamp.
    pub fn is_synced(&self, ts: SystemTime) -> bool {
        if self.policy == ClockPolicy::Off {
            return true;
        }
        let plausible = ts
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() >= MIN_PLAUSIBLE_UNIX)
            .unwrap_or(false);
        if !plausible || self.policy == ClockPolicy::Plausible {
            return plausible;
        }
        let Ok(mut st) = self.state.lock() else {
            return plausible;
        };
        if st.0 {
            return true;
        }
        let stale = st.1.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
        if stale {
            st.0 = kernel_synced();
            st.1 = Some(Instant::now());
        }
        st.0
    }
}

/// Asks the kernel through `adjtimex` (read-only: `modes == 0`).
#[cfg(target_os = "linux")]
pub fn kernel_synced() -> bool {
    // SAFETY: `timex` is plain data; adjtimex with modes 0 only reads into it.
    unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        state != libc::TIME_ERROR && state >= 0 && (tx.status & libc::STA_UNSYNC) == 0
    }
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_synced() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_times_are_flagged() {
        let c = ClockCheck::new(ClockPolicy::Plausible);
        assert!(!c.is_synced(SystemTime::UNIX_EPOCH + Duration::from_secs(60)));
        assert!(c.is_synced(SystemTime::UNIX_EPOCH + Duration::from_secs(MIN_PLAUSIBLE_UNIX + 1)));
        let k = ClockCheck::new(ClockPolicy::Kernel);
        assert!(!k.is_synced(SystemTime::UNIX_EPOCH));
        let off = ClockCheck::new(ClockPolicy::Off);
        assert!(off.is_synced(SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn kernel_policy_follows_adjtimex() {
        let k = ClockCheck::new(ClockPolicy::Kernel);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(MIN_PLAUSIBLE_UNIX + 10);
        assert_eq!(k.is_synced(now), kernel_synced());
    }
}
