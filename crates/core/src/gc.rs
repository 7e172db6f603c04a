//! Garbage collection: removes blobs no manifest references, stale upload sessions, objects or
//! upload data left without a record by a crash, audit events past their retention and old
//! failed-login counters. Safe while pushes run: the metadata store
//! re-checks every deletion inside its transaction, unreferenced content younger than the grace
//! period is kept, and storage keys are never reused.

use std::time::Duration;

use berth_blob::BlobStore;
use futures_util::StreamExt;
use berth_meta::MetadataStore;

use crate::error::Result;

/// What one collection removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcSummary {
    pub repository_links_removed: u64,
    pub blobs_removed: usize,
    pub stale_uploads_removed: usize,
    pub orphaned_objects_removed: usize,
    pub orphaned_upload_data_removed: usize,
    pub audit_events_removed: u64,
    pub login_failure_windows_removed: u64,
    /// Expired Berth tokens (personal access tokens, sessions) and logins in progress.
    pub expired_tokens_removed: u64,
    pub expired_logins_removed: u64,
}

/// Where a collection reports its phases (the CLI draws them on a terminal; the server's
/// scheduled runs say nothing).
pub trait Progress: Send + Sync {
    /// A new phase starts.
    fn phase(&self, what: &str);
    /// The collection ended.
    fn done(&self);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _what: &str) {}
    fn done(&self) {}
}

/// How long unreferenced content and idle uploads are kept, and how long the audit log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// Unreferenced blobs and objects younger than this stay (a push may be about to use them).
    pub grace: Duration,
    /// Upload sessions idle for this long are removed.
    pub upload_ttl: Duration,
    /// Audit events older than this are removed.
    pub audit_retention: Duration,
}

impl Default for GcSettings {
    /// The defaults of `[gc]`: 1 hour of grace, uploads idle for a day, 90 days of audit log.
    fn default() -> Self {
        GcSettings { grace: Duration::from_secs(3600), upload_ttl: Duration::from_secs(24 * 3600), audit_retention: Duration::from_secs(90 * 24 * 3600) }
    }
}

impl crate::Core {
    /// One garbage collection over this core's stores (the web UI's "run now").
    pub async fn collect_garbage(&self, settings: GcSettings) -> Result<GcSummary> {
        collect(&*self.meta, &*self.blobs, settings, &Quiet).await
    }
}

/// Runs one collection.
///
/// A free function over the stores (not a method of [`crate::Core`]) so that `berth gc` can run
/// offline, without the token key or the audit writer a serving core needs.
pub async fn collect(meta: &dyn MetadataStore, blobs: &dyn BlobStore, settings: GcSettings, progress: &dyn Progress) -> Result<GcSummary> {
    let GcSettings { grace, upload_ttl, audit_retention } = settings;
    let t = crate::clock::now_secs();
    progress.phase("finding unreferenced blobs and stale uploads");
    let report = meta.collect_garbage(t - grace.as_secs() as i64, t - upload_ttl.as_secs() as i64).await?;
    let mut s = GcSummary { repository_links_removed: report.links_removed, ..Default::default() };
    progress.phase(&format!("deleting {} blobs", report.deleted_keys.len()));
    for key in &report.deleted_keys {
        blobs.delete(key).await?;
        s.blobs_removed += 1;
    }
    for id in &report.stale_uploads {
        blobs.upload_abort(id).await?;
        s.stale_uploads_removed += 1;
    }
    progress.phase("looking for objects without a record");
    // Objects without a record: a crash between writing an object and recording it, or a
    // duplicate whose deletion failed. Only old ones, so an upload being committed is untouched.
    let mut keys = blobs.list_objects(grace.as_secs());
    while let Some(key) = keys.next().await {
        let key = key?;
        if !meta.key_in_use(&key).await? {
            blobs.delete(&key).await?;
            s.orphaned_objects_removed += 1;
        }
    }
    // Upload data without a record (sessions are recorded before their data is created).
    let mut ids = blobs.list_uploads();
    while let Some(id) = ids.next().await {
        let id = id?;
        if meta.get_upload(&id).await?.is_none() {
            blobs.upload_abort(&id).await?;
            s.orphaned_upload_data_removed += 1;
        }
    }
    progress.phase("pruning the audit log");
    // The audit log keeps `audit_retention`; failed-login counters only matter for their window.
    s.audit_events_removed = meta.prune_audit((t - audit_retention.as_secs() as i64).saturating_mul(1000)).await?;
    s.login_failure_windows_removed = meta.prune_login_failures(t - 86_400).await?;
    progress.phase("pruning expired tokens and logins");
    s.expired_tokens_removed = meta.prune_tokens(t).await?;
    s.expired_logins_removed = meta.prune_auth_requests(t).await?;
    progress.done();
    tracing::info!(
        blobs_removed = s.blobs_removed,
        repository_links_removed = s.repository_links_removed,
        stale_uploads_removed = s.stale_uploads_removed,
        orphaned_objects_removed = s.orphaned_objects_removed,
        orphaned_upload_data_removed = s.orphaned_upload_data_removed,
        audit_events_removed = s.audit_events_removed,
        login_failure_windows_removed = s.login_failure_windows_removed,
        expired_tokens_removed = s.expired_tokens_removed,
        expired_logins_removed = s.expired_logins_removed,
        "garbage collection finished"
    );
    Ok(s)
}
