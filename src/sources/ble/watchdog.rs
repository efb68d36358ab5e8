//! Scan watchdog (pure: time in, action out). BlueZ discovery can silently stop
//! delivering adverts after hours or days. When nothing at all was heard for
//! `silence` while devices are expected, restart discovery; after `reset_after`
//! restarts that brought nothing back, power-cycle the adapter; then start over.

use std::time::Duration;

use tokio::time::Instant;

use super::config::WatchdogConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    RestartDiscovery,
    ResetAdapter,
}

#[derive(Debug, Clone)]
pub struct Watchdog {
    cfg: WatchdogConfig,
    /// Last advert, or last recovery action (each action gets a full `silence` to work).
    quiet_since: Instant,
    restarts_without_success: u32,
    pub discovery_restarts: u64,
    pub adapter_resets: u64,
}

impl Watchdog {
    pub fn new(cfg: WatchdogConfig, now: Instant) -> Watchdog {
        Watchdog {
            cfg,
            quiet_since: now,
            restarts_without_success: 0,
            discovery_restarts: 0,
            adapter_resets: 0,
        }
    }

    /// Any advert proves the scan works.
    pub fn heard(&mut self, now: Instant) {
        self.quiet_since = now;
        self.restarts_without_success = 0;
    }

    /// Called periodically. `expecting`: some mapped device should be advertising.
    pub fn tick(&mut self, now: Instant, expecting: bool) -> Action {
        if !self.cfg.enabled || !expecting {
            self.quiet_since = now;
            return Action::None;
        }
        if now.saturating_duration_since(self.quiet_since) < self.cfg.silence {
            return Action::None;
        }
        self.quiet_since = now;
        if self.restarts_without_success < self.cfg.reset_after {
            self.restarts_without_success += 1;
            self.discovery_restarts += 1;
            Action::RestartDiscovery
        } else {
            self.restarts_without_success = 0;
            self.adapter_resets += 1;
            Action::ResetAdapter
        }
    }

    /// How often `tick` should run to notice silence promptly.
    pub fn check_period(&self) -> Duration {
        (self.cfg.silence / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(silence: u64, reset_after: u32) -> WatchdogConfig {
        WatchdogConfig {
            enabled: true,
            silence: Duration::from_secs(silence),
            reset_after,
        }
    }

    #[test]
    fn escalates_restart_then_reset_and_counts() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = Watchdog::new(cfg(60, 2), t0);
        assert_eq!(w.tick(s(59), true), Action::None);
        assert_eq!(w.tick(s(60), true), Action::RestartDiscovery);
        assert_eq!(
            w.tick(s(61), true),
            Action::None,
            "the restart gets a full silence period"
        );
        assert_eq!(w.tick(s(120), true), Action::RestartDiscovery);
        assert_eq!(w.tick(s(180), true), Action::ResetAdapter);
        assert_eq!(
            w.tick(s(240), true),
            Action::RestartDiscovery,
            "the cycle starts over"
        );
        assert_eq!((w.discovery_restarts, w.adapter_resets), (3, 1));
    }

    #[test]
    fn adverts_reset_the_escalation() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = Watchdog::new(cfg(60, 1), t0);
        assert_eq!(w.tick(s(60), true), Action::RestartDiscovery);
        w.heard(s(70));
        assert_eq!(w.tick(s(129), true), Action::None);
        assert_eq!(
            w.tick(s(130), true),
            Action::RestartDiscovery,
            "not a reset: the restart had worked"
        );
        assert_eq!(w.tick(s(190), true), Action::ResetAdapter);
    }

    #[test]
    fn nothing_expected_or_disabled_means_no_action() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(10, 0), t0);
        assert_eq!(w.tick(t0 + Duration::from_secs(100), false), Action::None);
        assert_eq!(
            w.tick(t0 + Duration::from_secs(105), true),
            Action::None,
            "expectation starts the clock"
        );
        assert_eq!(
            w.tick(t0 + Duration::from_secs(110), true),
            Action::ResetAdapter,
            "reset_after 0 goes straight to reset"
        );
        let mut off = Watchdog::new(
            WatchdogConfig {
                enabled: false,
                ..cfg(10, 1)
            },
            t0,
        );
        assert_eq!(off.tick(t0 + Duration::from_secs(1000), true), Action::None);
        assert_eq!(w.check_period(), Duration::from_secs(1));
    }
}
