//! The bounds on what a client can make Berth spend: connections, time, password checks, body
//! sizes, failed logins. One documented struct with defaults (the `[limits]` section of the
//! configuration; docs/configuration.md and docs/operations.md explain each).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every resource limit of the HTTP layer. The defaults suit a registry on a small machine that
/// serves hundreds of CI jobs at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open client connections at most; further connections wait in the kernel's backlog until
    /// one closes (a warning is logged at most once a minute while the limit is reached).
    pub max_connections: usize,
    /// Open connections from one client address at most; more are closed at once (logged at
    /// most once a minute), so one client cannot take every connection slot.
    pub max_connections_per_address: usize,
    /// Time a client has to send a request's headers, from the connection's start or the end of
    /// the previous request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection (no request in flight) is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body must deliver at least `body_min_rate` bytes per second, measured over
    /// windows of this length; a body that delivers less in one window fails (408), and so does
    /// a body that sends nothing for a whole window.
    #[serde(with = "humantime_serde")]
    pub body_rate_window: Duration,
    /// Minimum average body data rate in bytes per second (see `body_rate_window`).
    pub body_min_rate: u64,
    /// Password and secret checks (argon2id) running at once at most. Each needs the hash's
    /// memory cost (19 MiB with Berth's defaults). Default: the number of cores.
    pub password_checks: usize,
    /// How long a login waits for a free password-check slot before it gets 503.
    #[serde(with = "humantime_serde")]
    pub password_check_wait: Duration,
    /// Memory cost of new argon2id hashes in KiB (existing hashes keep their own parameters).
    pub password_hash_memory_kib: u32,
    /// Failed logins allowed per account and client address in one window.
    pub login_failures_per_account_address: u32,
    /// Failed logins allowed per client address (any account) in one window.
    pub login_failures_per_address: u32,
    /// Length of the window of the two limits above.
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
    /// Failed logins allowed per account from all addresses together in one `login_account_window`:
    /// a slow global ceiling for distributed guessing that never locks an account for long.
    pub login_failures_per_account: u32,
    /// Length of the window of `login_failures_per_account`.
    #[serde(with = "humantime_serde")]
    pub login_account_window: Duration,
}

/// The number of cores, at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_connections_per_address: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            body_rate_window: Duration::from_secs(30),
            body_min_rate: 1024,
            password_checks: cores(),
            password_check_wait: Duration::from_secs(5),
            password_hash_memory_kib: 19 * 1024,
            login_failures_per_account_address: 10,
            login_failures_per_address: 30,
            login_window: Duration::from_secs(300),
            login_failures_per_account: 100,
            login_account_window: Duration::from_secs(3600),
        }
    }
}

impl Limits {
    /// Refuses settings that would disable a limit by accident.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_address", self.max_connections_per_address as u64),
            ("password_checks", self.password_checks as u64),
            ("login_failures_per_account_address", self.login_failures_per_account_address as u64),
            ("login_failures_per_address", self.login_failures_per_address as u64),
            ("login_failures_per_account", self.login_failures_per_account as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        let durations = [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_rate_window", self.body_rate_window),
            ("login_window", self.login_window),
            ("login_account_window", self.login_account_window),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                return Err(format!("limits.{name} must be longer than 0s"));
            }
        }
        if self.password_hash_memory_kib < 8 * 1024 {
            return Err("limits.password_hash_memory_kib must be at least 8192 (8 MiB); OWASP recommends 19456".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeroes_are_refused() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let cases: Vec<(Limits, &str)> = vec![
            (Limits { max_connections: 0, ..Limits::default() }, "limits.max_connections"),
            (Limits { password_checks: 0, ..Limits::default() }, "limits.password_checks"),
            (Limits { idle_timeout: Duration::ZERO, ..Limits::default() }, "limits.idle_timeout"),
            (Limits { password_hash_memory_kib: 1024, ..Limits::default() }, "limits.password_hash_memory_kib"),
        ];
        for (l, want) in cases {
            let e = l.validate().unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
