//! The one wall clock of Berth's server side: Unix seconds and milliseconds. Every layer above
//! (token lifetimes, federation, the application core's records, the audit log) reads the time
//! here, so there is one definition of "now" (and one place to look when a test needs to reason
//! about it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is before it).
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Seconds since the Unix epoch, unsigned (token claims use `u64`).
pub fn now_unsigned() -> u64 {
    now_secs().max(0) as u64
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
