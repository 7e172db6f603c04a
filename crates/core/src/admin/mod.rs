//! The admin commands: one typed request and one typed answer per command, used by the admin
//! API's handlers and by the CLI alike ([`types`]). Each command is a method of [`Core`]:
//!
//! | command | request | answer |
//! |---|---|---|
//! | projects | [`ProjectSpec`], a name | [`ProjectView`] |
//! | robots | [`RobotSpec`], [`RobotFilter`], a name | [`RobotView`], [`RobotCreated`] (with a secret shown once) |
//! | identity providers | [`ProviderSpec`], a name | [`IdentityProviderView`], [`IdentityProviderTest`] |
//! | users | [`UserSpec`], a name | [`UserView`], [`UserSaved`] |
//! | audit log | [`AuditFilter`] | [`AuditEventView`]s |
//! | token explain | a token | [`Explanation`](berth_identity::federation::Explanation) |
//! | apply | [`ApplyDocument`] | [`ApplyReport`] |
//!
//! Every failure is a [`crate::Error`] (`Invalid`, `NotFound`, `Conflict`, `Internal`); the
//! translation layers decide statuses and wording of their own format from its kind.
//!
//! Writes that must be atomic are one store call each: creating a robot or an identity provider
//! only when its name is free (two concurrent creates: one wins, the other is a `Conflict`), and a
//! whole `apply` document (one transaction: a document that fails on its last object writes
//! nothing). After a change the federation snapshot of this process is reloaded at once (other
//! processes on the store see it within a second).
//!
//! [`ProjectSpec`]: types::ProjectSpec
//! [`ProjectView`]: types::ProjectView
//! [`RobotSpec`]: types::RobotSpec
//! [`RobotView`]: types::RobotView
//! [`RobotCreated`]: types::RobotCreated
//! [`ProviderSpec`]: berth_identity::federation::ProviderSpec
//! [`IdentityProviderView`]: types::IdentityProviderView
//! [`UserSpec`]: types::UserSpec
//! [`UserView`]: types::UserView
//! [`AuditEventView`]: types::AuditEventView
//! [`ApplyDocument`]: types::ApplyDocument
//! [`ApplyReport`]: types::ApplyReport

pub mod types;

mod apply;
mod audit_log;
mod members;
mod projects;
mod providers;
mod robots;
mod users;

pub use apply::{validate_document, ValidatedDocument};
pub use audit_log::AuditFilter;
pub use providers::IdentityProviderTest;
pub use robots::{outside_project, robot_record, RobotFilter};
pub use users::{user_view, validate_local_groups, validate_user_name, UserSaved};

use crate::{Core, Error, Result};

/// A Unix time as RFC 3339 in seconds (`2026-12-31T23:59:59Z`); empty if out of range.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Parses an RFC 3339 time given in `field` into Unix seconds.
pub fn parse_time(field: &str, s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp())
        .map_err(|e| Error::Invalid(format!("{field} {s:?} is not an RFC 3339 time like 2026-12-31T23:59:59Z: {e}")))
}

/// Hashes a secret or password (argon2id) off the async threads.
async fn hash_secret(secret: String) -> Result<String> {
    tokio::task::spawn_blocking(move || berth_identity::password::hash(&secret))
        .await
        .map_err(|e| Error::internal("hashing a secret", e))?
        .map_err(|e| Error::internal("hashing a secret", e))
}

/// `Invalid(m)` becomes `Invalid("<what>: m")`; other kinds pass unchanged.
fn within(what: impl std::fmt::Display, e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
        other => other,
    }
}

impl Core {
    /// Makes this process see an admin change at once (other processes on the store see it
    /// within a second, when they poll the store's generation).
    pub(crate) async fn changed(&self) {
        if let Err(e) = self.federation.reload_now().await {
            tracing::warn!(error = %e, "reloading federation configuration");
        }
    }
}
