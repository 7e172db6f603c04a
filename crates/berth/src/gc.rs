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

/// Runs one collection.
pub async fn collect(meta: &dyn MetadataStore, blobs: &dyn BlobStore, grace: Duration, upload_ttl: Duration, audit_retention: Duration) -> anyhow::Result<GcSummary> {
    let t = now();
    let report = meta.collect_garbage(t - grace.as_secs() as i64, t - upload_ttl.as_secs() as i64).await?;
    let mut s = GcSummary { repository_links_removed: report.links_removed, ..Default::default() };
    for key in &report.deleted_keys {
        blobs.delete(key).await?;
        s.blobs_removed += 1;
    }
    for id in &report.stale_uploads {
        blobs.upload_delete(id).await?;
        s.stale_uploads_removed += 1;
    }
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
    // The audit log keeps `audit_retention`; failed-login counters only matter for their window.
    s.audit_events_removed = meta.prune_audit((t - audit_retention.as_secs() as i64).saturating_mul(1000)).await?;
    s.login_failure_windows_removed = meta.prune_login_failures(t - 86_400).await?;
    tracing::info!(?s, "garbage collection finished");
    Ok(s)
}
