//! The registry's workflows (the OCI distribution API's meaning, without its HTTP form): access
//! decisions on repositories, blobs, manifests and tags, discovery, and uploads.
//!
//! Every operation on a repository takes the caller's [`Caller`] through [`Core::authorize`]
//! first (the HTTP layer and any other translation layer alike); refusals and the operations
//! that matter (manifest pulls and pushes, deletes) are audited here.

use std::net::IpAddr;

use berth_access::Action;
use berth_meta::{BlobRecord, ManifestRecord, NewManifest, PutManifestOutcome};
use berth_oci::manifest::{self, ManifestError};
use berth_oci::ParsedManifest;
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use berth_identity::PrincipalKind;

use crate::audit::{AuditAction, AuditResult, EventBuilder};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::{AnonymousAccess, Core};

pub mod discovery;
pub mod uploads;

pub use discovery::{Listing, CATALOG_SCAN_ROWS, MAX_CATALOG_PAGE};

/// The most tags one manifest push may set. All are written in the manifest's transaction, one
/// upsert each, so the number is bounded; pushing more tags takes several requests.
pub const MAX_TAGS_PER_PUT: usize = 16;

/// Why a caller may not do something on a repository. The translation layer decides how to ask
/// for more (a Bearer challenge) from `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Nobody logged in: credentials could help.
    Anonymous,
    /// A registry token without the scope: a token with more scope could help.
    TokenScope { message: String },
    /// The principal itself is not allowed.
    Forbidden { message: String },
}

impl Denial {
    pub fn message(&self) -> &str {
        match self {
            Denial::Anonymous => "authentication required",
            Denial::TokenScope { message } | Denial::Forbidden { message } => message,
        }
    }
}

/// What a registry operation is, for the audit log.
pub struct Audited<'a> {
    pub action: AuditAction,
    pub repo: &'a RepoName,
    /// A tag or digest as the client wrote it (capped when recorded).
    pub reference: &'a str,
}

impl Core {
    /// Whether `caller` may do `action` on `repo`. A refusal of a logged-in caller is logged and
    /// audited (floods of one refusal collapse into one row and a count).
    pub fn authorize(&self, caller: &Caller, repo: &RepoName, action: Action, reference: &str, client: Option<IpAddr>) -> std::result::Result<(), Denial> {
        if caller.allows(repo.as_str(), action) {
            return Ok(());
        }
        let denial = if caller.kind == PrincipalKind::Anonymous {
            return Err(Denial::Anonymous);
        } else if caller.is_token() {
            Denial::TokenScope { message: format!("the token does not allow {} on {repo}", action.as_str()) }
        } else {
            tracing::info!(subject = %caller.subject, %repo, action = action.as_str(), "denied");
            Denial::Forbidden { message: format!("{} may not {} {repo}", caller.subject, action.as_str()) }
        };
        let audit_action = match action {
            Action::Pull => AuditAction::Pull,
            Action::Push => AuditAction::Push,
            Action::Delete => AuditAction::Delete,
        };
        self.audit_registry(caller, Audited { action: audit_action, repo, reference }, AuditResult::Denied, Some(denial.message()), client);
        Err(denial)
    }

    /// Why a person was refused `action` on `repo`, in words that name their role in the
    /// repository's project (from their memberships and groups, as stored now), or that the
    /// token they used is restricted. None for robots and anonymous callers (their refusal says
    /// enough), and when the store cannot tell.
    pub async fn explain_refusal(&self, caller: &Caller, repo: &RepoName, action: Action) -> Option<String> {
        if caller.kind != PrincipalKind::User {
            return None;
        }
        let project = repo.as_str().split('/').next().unwrap_or_default();
        let user = self.meta.get_user(&caller.subject).await.ok()??;
        let role = self.project_roles(&user).await.ok()?.get(project).map(|(r, _)| *r);
        if role.is_some_and(|r| r.actions().contains(action)) {
            // The role allows it: the credential used is narrower than the person.
            return caller.origin.as_ref().and_then(|o| o.token.as_deref()).map(|id| {
                format!(
                    "{} is {} in project {project}, but the token {id} used here does not allow {} there (it is restricted, or was issued before the role changed)",
                    caller.subject,
                    role.map(|r| r.as_str()).unwrap_or_default(),
                    action.as_str()
                )
            });
        }
        Some(berth_access::refusal(&caller.subject, project, role, action))
    }

    /// Whether an anonymous caller may list the catalog (only where anonymous pulls are on:
    /// public projects alone do not open it; their repositories are pulled by name).
    pub fn anonymous_catalog(&self) -> bool {
        self.config.anonymous != AnonymousAccess::Off
    }

    /// Whether anonymous callers may do everything (then `/v2/` does not challenge them).
    pub fn anonymous_read_write(&self) -> bool {
        self.config.anonymous == AnonymousAccess::ReadWrite
    }

    /// Records a registry operation's outcome in the audit log.
    pub fn audit_registry(&self, caller: &Caller, what: Audited<'_>, result: AuditResult, message: Option<&str>, client: Option<IpAddr>) {
        let mut b = EventBuilder::new(what.action, result, &caller.subject)
            .origin(caller.origin.as_deref())
            .repository(what.repo.as_str())
            .reference(what.reference)
            .client(client);
        if let Some(m) = message {
            b = b.message(m);
        }
        let event = b.build();
        // Refusals repeat: a caller denied the same thing again and again gets one row and a count.
        if result == AuditResult::Ok {
            self.audit.record(event);
        } else {
            let key = format!(
                "{}|{}|{}|{}|{}",
                what.action.as_str(),
                result.as_str(),
                caller.subject,
                event.client.as_deref().unwrap_or(""),
                what.repo
            );
            self.audit.record_collapsing(key, event);
        }
    }

    // ---- blobs ----

    /// The blob record of `digest` in `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobRecord> {
        self.meta.repo_blob(repo, digest).await?.ok_or_else(|| Error::BlobUnknown(digest.to_string()))
    }

    /// Opens a blob's bytes; `range` is inclusive and already checked against the size.
    pub async fn open_blob(&self, record: &BlobRecord, range: Option<(u64, u64)>) -> Result<berth_blob::ObjectReader> {
        let reader = self.blobs.open(&record.storage_key, range).await?;
        metrics::counter!("berth_bytes_sent_total").increment(range.map(|(s, e)| e - s + 1).unwrap_or(record.size));
        Ok(reader)
    }

    /// Where the client may fetch the blob itself (a presigned URL of the blob store), when
    /// `blob_redirect` is on and the store has such URLs; None: serve it with [`Core::open_blob`].
    /// The caller was authorised for the repository before; the URL names only this object.
    pub async fn blob_redirect(&self, record: &BlobRecord) -> Result<Option<String>> {
        let Some(ttl) = self.config.blob_redirect else { return Ok(None) };
        let url = self.blobs.presign_get(&record.storage_key, ttl).await?;
        if url.is_some() {
            metrics::counter!("berth_blob_redirects_total").increment(1);
        }
        Ok(url)
    }

    /// Removes a blob from a repository (garbage collection frees its bytes later).
    pub async fn delete_blob(&self, caller: &Caller, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.meta.unlink_blob(repo, digest).await? {
            return Err(Error::BlobUnknown(digest.to_string()));
        }
        tracing::info!(%repo, %digest, subject = %caller.subject, "blob deleted from repository");
        Ok(())
    }

    // ---- manifests ----

    /// The manifest a tag or digest names in `repo`.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestRecord> {
        self.meta.get_manifest(repo, reference).await?.ok_or_else(|| Error::ManifestUnknown(reference.to_string()))
    }

    /// Validates and stores a manifest with all its tags in one transaction, or nothing.
    pub async fn put_manifest(&self, caller: &Caller, repo: &RepoName, put: PutManifest<'_>) -> Result<StoredManifest> {
        if put.tags.len() > MAX_TAGS_PER_PUT {
            return Err(Error::TagInvalid(format!(
                "the request sets {} tags; set at most {MAX_TAGS_PER_PUT} per request and the rest with further PUTs by digest; nothing was written",
                put.tags.len()
            )));
        }
        let algorithm = put.digest.map_or(Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::compute(algorithm, put.bytes);
        if let Some(d) = put.digest {
            if d != &digest {
                return Err(Error::DigestInvalid(format!("manifest content has digest {digest}, not {d}")));
            }
        }
        let parsed = manifest::parse(put.bytes, put.content_type).map_err(|e| match e {
            ManifestError::TooLarge => Error::SizeInvalid(e.to_string()),
            other => Error::ManifestInvalid(other.to_string()),
        })?;
        // One store call, one transaction: the manifest, its references and every tag, or nothing.
        let outcome = self
            .meta
            .put_manifest(repo, NewManifest { digest: &digest, bytes: put.bytes, parsed: &parsed, tags: put.tags }, crate::clock::now_secs())
            .await?;
        if let PutManifestOutcome::Missing(missing) = outcome {
            let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
            return Err(Error::ManifestBlobUnknown {
                message: format!("the manifest references content that is not in {repo}: {}; push it first", list.join(", ")),
                missing,
            });
        }
        let tags_text = put.tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",");
        tracing::info!(%repo, tags = %tags_text, %digest, subject = %caller.subject, "manifest pushed");
        Ok(StoredManifest { digest, parsed })
    }

    /// Deletes a manifest by digest (with its tags) or one tag.
    pub async fn delete_manifest(&self, caller: &Caller, repo: &RepoName, reference: &Reference) -> Result<()> {
        let found = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if !found {
            return Err(Error::ManifestUnknown(reference.to_string()));
        }
        tracing::info!(%repo, %reference, subject = %caller.subject, "manifest deleted");
        Ok(())
    }
}

/// A manifest push.
#[derive(Debug, Clone, Copy)]
pub struct PutManifest<'a> {
    pub bytes: &'a [u8],
    /// The request's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// Every tag to point at the manifest (at most [`MAX_TAGS_PER_PUT`]).
    pub tags: &'a [Tag],
    /// The digest the client named; the bytes must hash to it (its algorithm is used).
    pub digest: Option<&'a Digest>,
}

/// A stored manifest: its digest and what validation found in it.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub parsed: ParsedManifest,
}
