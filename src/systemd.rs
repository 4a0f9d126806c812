//! The systemd service protocol: readiness, status text, watchdog, stopping, start-timeout
//! extension. Every call is a no-op when the process was not started by systemd (no
//! `NOTIFY_SOCKET`), so roles call it unconditionally.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Talks to the service manager. Cheap to share (`Arc`) between a role's tasks.
pub struct Notifier {
    enabled: bool,
    /// Half the `WATCHDOG_USEC` period: how often the main loop must prove it is alive.
    watchdog_every: Option<Duration>,
    last_watchdog: Mutex<Option<Instant>>,
    last_status: Mutex<String>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` once, at start.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        Notifier {
            enabled,
            watchdog_every: if enabled {
                sd_notify::watchdog_enabled().map(|period| period / 2)
            } else {
                None
            },
            last_watchdog: Mutex::new(None),
            last_status: Mutex::new(String::new()),
        }
    }

    /// A notifier that never sends anything (tests, foreground runs).
    pub fn disabled() -> Notifier {
        Notifier {
            enabled: false,
            watchdog_every: None,
            last_watchdog: Mutex::new(None),
            last_status: Mutex::new(String::new()),
        }
    }

    /// The interval at which the main loop should call [`Notifier::watchdog`], if systemd asked.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.remember_status(status);
    }

    /// Sends STATUS= only when the text changed, so a loop can call it every iteration.
    pub fn status(&self, status: &str) {
        if self.remember_status(status) {
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// Called from a role's main loop: pings at most once per half period, so only a loop that
    /// is really iterating keeps the service alive.
    pub fn watchdog(&self) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        let mut last = self.last_watchdog.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= every);
        if due {
            *last = Some(Instant::now());
            drop(last);
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// Asks systemd for more start (or stop) time during long work such as a base backup.
    pub fn extend_timeout(&self, by: Duration, status: &str) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(status),
        ]);
        self.remember_status(status);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    fn remember_status(&self, status: &str) -> bool {
        let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
        if *last == status {
            return false;
        }
        *last = status.to_string();
        true
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // Losing a notification is not fatal; systemd's timeouts are the backstop.
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}
