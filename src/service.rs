//! systemd integration: readiness, reload and watchdog notifications. Everything here is a
//! no-op when not started by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

pub fn notify_ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// `Type=notify-reload` needs the monotonic timestamp with RELOADING=1.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading, now]);
        }
        Err(_) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading]);
        }
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings systemd's watchdog at half its interval, but only while the pipeline makes
/// progress: a wedged router stops the pings and systemd restarts the service.
pub struct Watchdog {
    interval: Option<Duration>,
    timer: tokio::time::Interval,
}

impl Watchdog {
    pub fn from_env() -> Watchdog {
        let interval = sd_notify::watchdog_enabled();
        let period = interval.map(|i| i / 2).unwrap_or(Duration::from_secs(3600));
        Watchdog {
            interval,
            timer: tokio::time::interval(period),
        }
    }

    pub async fn tick(&mut self) {
        self.timer.tick().await;
    }

    /// `stalled_for`: how long ago the pipeline last made progress.
    pub fn ping_if_alive(&self, stalled_for: Duration) {
        let Some(interval) = self.interval else {
            return;
        };
        if stalled_for < interval {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(
                stalled_ms = stalled_for.as_millis() as u64,
                "pipeline stalled; withholding the watchdog ping"
            );
        }
    }
}
