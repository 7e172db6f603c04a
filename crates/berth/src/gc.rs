//! Garbage collection: removes blobs no manifest references, stale upload sessions, objects or
//! upload data left without a record by a crash, audit events past their retention and old
//! failed-login counters. Safe while pushes run: the metadata store
//! re-checks every deletion inside its transaction, unreferenced content younger than the grace
//! period is kept, and storage keys are never reused.

use std::time::Duration;

use berth_blob::BlobStore;
use berth_meta::MetadataStore;

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
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Where a collection reports its phases: nowhere (the server's scheduled runs), or one line
/// on stderr rewritten in place (`berth gc` on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Quiet,
    Terminal,
}

impl Progress {
    fn phase(self, what: &str) {
        if self == Progress::Terminal {
            use std::io::Write as _;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2Kgarbage collection: {what}...");
            let _ = err.flush();
        }
    }
    fn done(self) {
        if self == Progress::Terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Runs one collection.
pub async fn collect(
    meta: &dyn MetadataStore,
    blobs: &dyn BlobStore,
    grace: Duration,
    upload_ttl: Duration,
    audit_retention: Duration,
    progress: Progress,
) -> anyhow::Result<GcSummary> {
    let t = now();
    progress.phase("finding unreferenced blobs and stale uploads");
    let report = meta.collect_garbage(t - grace.as_secs() as i64, t - upload_ttl.as_secs() as i64).await?;
    let mut s = GcSummary { repository_links_removed: report.links_removed, ..Default::default() };
    progress.phase(&format!("deleting {} blobs", report.deleted_keys.len()));
    for key in &report.deleted_keys {
        blobs.delete(key).await?;
        s.blobs_removed += 1;
    }
    for id in &report.stale_uploads {
        blobs.upload_delete(id).await?;
        s.stale_uploads_removed += 1;
    }
    progress.phase("looking for objects without a record");
    // Objects without a record: a crash between writing an object and recording it, or a
    // duplicate whose deletion failed. Only old ones, so an upload being committed is untouched.
    for key in blobs.list_keys(grace.as_secs()).await? {
        if !meta.key_in_use(&key).await? {
            blobs.delete(&key).await?;
            s.orphaned_objects_removed += 1;
        }
    }
    // Upload data without a record (sessions are recorded before their data is created).
    for id in blobs.upload_ids().await? {
        if meta.get_upload(&id).await?.is_none() {
            blobs.upload_delete(&id).await?;
            s.orphaned_upload_data_removed += 1;
        }
    }
    progress.phase("pruning the audit log");
    // The audit log keeps `audit_retention`; failed-login counters only matter for their window.
    s.audit_events_removed = meta.prune_audit((t - audit_retention.as_secs() as i64).saturating_mul(1000)).await?;
    s.login_failure_windows_removed = meta.prune_login_failures(t - 86_400).await?;
    progress.done();
    tracing::info!(
        blobs_removed = s.blobs_removed,
        repository_links_removed = s.repository_links_removed,
        stale_uploads_removed = s.stale_uploads_removed,
        orphaned_objects_removed = s.orphaned_objects_removed,
        orphaned_upload_data_removed = s.orphaned_upload_data_removed,
        audit_events_removed = s.audit_events_removed,
        login_failure_windows_removed = s.login_failure_windows_removed,
        "garbage collection finished"
    );
    Ok(s)
}
