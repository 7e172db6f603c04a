//! The metadata store: repositories, blob records and their links to repositories, manifests
//! (raw bytes + what validation extracted), tags, upload sessions, users (local, or onboarded
//! from an OpenID provider), the tokens Berth issues to users, logins in progress and settings;
//! and, for workload identity federation, projects, project members, robot accounts, identity
//! providers, the audit log and failed-login counters.
//!
//! One narrow trait, [`MetadataStore`], with two backends that run the same test suite in full
//! (the module `testsuite`: compiled for this crate's own tests, and for other crates' tests with
//! the cargo feature `testsuite`; never in release binaries): SQLite in [`sqlite`] (one file,
//! several processes on one machine) and PostgreSQL in [`postgres`] (replicas on one database;
//! its module docs say which locks keep each method atomic, and its tests need the server that
//! `scripts/postgres.sh` starts). Every operation that must be atomic (a manifest with its
//! references and tags; a blob record with its repository link; a garbage collection deletion
//! re-checked under the write lock, or PostgreSQL's row locks; a claim on an upload and its
//! compare-and-set release; creating a robot or provider only if its name is free; a whole
//! `apply` batch) is one method, so it is one transaction.
//!
//! Moving an installation (`berth migrate`) goes through the same trait: every [`Table`] is
//! exported page by page in key order ([`MetadataStore::export`]), the destination drops what
//! the page's key range no longer holds ([`MetadataStore::prune`]) and writes the page verbatim,
//! times and ids included ([`MetadataStore::import`], idempotent). Blob records are imported with
//! the keys the destination's blob storage gave their bytes. The shared suite's `transfer` part
//! runs it between every pair of backends.
//!
//! Architecture invariant: blob *records* point to storage keys; a storage key is written once and
//! never reused. So a garbage collection that deletes a record (and then its object) can never
//! race a concurrent upload of the same digest: that upload writes a fresh key.
//!
//! Federation state is shared by replicas through the store:
//! - Projects, robots and identity providers are plain records; their JSON documents (claim rules,
//!   permission entries, provider configs) are stored as given and validated by higher layers, but
//!   the store enforces the facts between rows: a robot's project and provider exist (else
//!   [`MetaError::Conflict`] naming the missing one), a robot has a static secret or a provider but
//!   not both, and a project or provider is not deleted while robots refer to it
//!   ([`DeleteOutcome::InUse`]).
//! - Every change to them, to users (and their groups) and every deletion of a user's token
//!   increases the [federation generation](MetadataStore::federation_generation) in the same
//!   transaction; each process keeps a compiled snapshot (and login caches) and reloads it when
//!   the generation moves.
//! - The audit log is appended in batches and queried newest first with exact filters
//!   ([`AuditQuery`]); the failed-login counters count per opaque key and fixed window.

use async_trait::async_trait;
use berth_oci::{Digest, ParsedManifest, Reference, RepoName, Tag};

pub mod postgres;
pub mod sqlite;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// Metadata store errors. The server maps them to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The backend failed; its own error type stays at its edge (the message keeps its text).
    #[error("database error: {0}")]
    Db(String),
    /// The database does not answer (no connection within the pool's acquire timeout, a
    /// connection lost, the server shutting down or out of connection slots). Nothing of the
    /// operation was committed; the same request may be retried later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A write refers to something that does not exist, or breaks a rule of the data (a robot of
    /// an unknown project or identity provider; a robot with both a secret and a provider).
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Seconds since the Unix epoch. All timestamps in the store use this.
pub type UnixTime = i64;

/// A blob record as seen from one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: u64,
    /// Where the bytes are in the blob store.
    pub storage_key: String,
}

/// The result of recording a freshly uploaded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobCommit {
    /// The new storage key is now the blob's key.
    Stored,
    /// The digest was already known: the existing key stays, the caller deletes its new object.
    AlreadyPresent { existing_key: String },
}

/// A manifest to record, with the tags to point at it.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub bytes: &'a [u8],
    pub parsed: &'a ParsedManifest,
    /// Tags to point at the manifest, set in the same transaction (empty: none). A tag listed
    /// twice is set once.
    pub tags: &'a [Tag],
}

/// Why a manifest was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifestOutcome {
    Stored,
    /// These referenced blobs (config/layers) or child manifests are not in the repository.
    Missing(Vec<Digest>),
}

/// A stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// The `subject` digest, if the manifest has one.
    pub subject: Option<Digest>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// Annotations as a JSON object, if any.
    pub annotations: Option<serde_json::Value>,
}

/// An upload session. Its bytes live in the blob store under the same id; the record holds how
/// far the finished writes got, so that the next write (from any process) continues from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub repo: RepoName,
    pub created: UnixTime,
    /// The last activity: creation, a claim, a touch or a release (garbage collection removes
    /// sessions idle since its upload cutoff).
    pub updated: UnixTime,
    /// Bytes stored by the writes that finished (the next write starts here).
    pub offset: u64,
    /// The serialised running hash of those bytes (`berth_oci::ResumableHasher::checkpoint`;
    /// empty before the first write). Opaque to the store.
    pub hash_state: Vec<u8>,
    /// Writes finished so far; the next write is part `parts + 1`.
    pub parts: u32,
}

/// The answer to a claim on an upload ([`MetadataStore::claim_upload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadClaim {
    /// The caller holds the upload until it releases it or the lease ends.
    Claimed(UploadRecord),
    /// Another request holds it (its lease has not ended). Checked before the offset: the
    /// holder's release will move it.
    Busy { offset: u64 },
    /// The upload's offset is not the one the caller expected.
    OutOfOrder { offset: u64 },
    /// No such upload (or it belongs to another repository).
    Unknown,
}

/// A user: a person with a local password, or one onboarded from an OpenID provider (then
/// identified by its issuer and subject, never by name or email alone), or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// PHC string (argon2id); empty: the user has no password (people from an OpenID provider).
    pub password_hash: String,
    pub admin: bool,
    /// A disabled user never logs in; the record (and its hash) stays, so enabling it again
    /// needs no new password.
    pub disabled: bool,
    /// The OpenID identity this user logs in with; unique over all users.
    pub identity: Option<UserIdentity>,
    pub email: Option<String>,
    /// The groups the identity provider reported at the last login or re-check, as Berth names
    /// them (after the provider's group-name mapping), sorted, without duplicates (the store
    /// sorts and deduplicates what it is given).
    pub groups: Vec<String>,
    pub created_at: UnixTime,
    pub last_login_at: Option<UnixTime>,
}

/// `groups` sorted, without duplicates: what [`UserRecord::groups`] holds (bytewise order, as
/// the stores compare names).
pub(crate) fn normalized_groups(groups: &[String]) -> Vec<String> {
    let mut sorted = groups.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// The refusal of a write that would link `identity` to a second user (`holder` has it).
pub(crate) fn identity_taken(identity: &UserIdentity, holder: &str) -> MetaError {
    MetaError::Conflict(format!(
        "the identity {:?} of {} is already linked to user {holder:?}",
        identity.subject, identity.issuer
    ))
}

/// Tokens of an import whose parent is neither in the store nor in the import: deferred when the
/// parent sorts after them (a later page of the walk brings it), else skipped (see
/// [`MetadataStore::import`]).
pub(crate) fn wait_for_parents(outcome: &mut ImportOutcome, orphans: &[&TokenRecord]) {
    for t in orphans {
        match &t.parent {
            Some(parent) if *parent > t.id => outcome.deferred.push(RowKey::Name(t.id.clone())),
            parent => outcome.skipped.push(format!("token {:?}: its parent token {parent:?} is not here", t.id)),
        }
    }
}

/// The refusal of a login in progress beyond [`MetadataStore::put_auth_request`]'s bound.
pub(crate) fn too_many_logins(max_pending: u64) -> MetaError {
    MetaError::Conflict(format!("{max_pending} logins are in progress already, the most this registry holds at once; try again later"))
}

/// Who a person is at an OpenID provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserIdentity {
    /// The identity provider's name in Berth (where to re-check the user).
    pub provider: String,
    /// The `iss` of its ID tokens, as the provider sends it.
    pub issuer: String,
    /// The `sub` of its ID tokens.
    pub subject: String,
}

/// What a token (a credential Berth issued to a user) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A personal access token, created by its user with a name and an expiry.
    Personal,
    /// The credential of a `berth login` (the CLI's session).
    Cli,
    /// A browser session (the cookie of the web login).
    Web,
    /// A short-lived registry password handed out by the credential helper, derived from a
    /// `Cli` token (its parent).
    Helper,
}

impl TokenKind {
    pub const ALL: [TokenKind; 4] = [TokenKind::Personal, TokenKind::Cli, TokenKind::Web, TokenKind::Helper];
    /// Its name in the store and on the wire: `personal`, `cli`, `web`, `helper`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Personal => "personal",
            TokenKind::Cli => "cli",
            TokenKind::Web => "web",
            TokenKind::Helper => "helper",
        }
    }
    pub fn parse(s: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A credential Berth issued to a user. Only a hash of its secret is stored. Its `Debug` shows
/// neither that hash nor the refresh token.
#[derive(Clone, PartialEq)]
pub struct TokenRecord {
    /// Public, random, unique id (letters and digits); part of the token's text, shown in lists.
    pub id: String,
    pub user: String,
    pub kind: TokenKind,
    /// Chosen by the user for personal tokens ("laptop"), else a description ("berth login").
    pub name: String,
    /// Lowercase hex SHA-256 of the secret part (the secret is 256 random bits, so a fast hash
    /// is enough; compared in constant time above the store).
    pub secret_hash: String,
    /// A token deleted with this one (a helper credential's login).
    pub parent: Option<String>,
    /// A restriction to projects and actions (JSON validated by higher layers); None: all the
    /// user's access.
    pub scope: Option<serde_json::Value>,
    pub created_at: UnixTime,
    /// None: no expiry (only when the administrator's maximum allows it).
    pub expires_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
    /// The identity provider's refresh token of the login that made this token (`Cli`, `Web`),
    /// used to re-check the user's groups and account in the background.
    pub refresh_token: Option<String>,
    /// When the user was last re-checked at the identity provider through this token.
    pub checked_at: Option<UnixTime>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secret_hash", &"<redacted>")
            .field("parent", &self.parent)
            .field("scope", &self.scope)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("checked_at", &self.checked_at)
            .finish()
    }
}

/// A login in progress (an OpenID authorization request waiting for its callback, a device
/// authorization waiting for the person): transient, shared by replicas, single use.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthRequest {
    /// Random (the `state` of an authorization request, a handle of a device authorization).
    pub id: String,
    /// What it is (`web`, `device`, ...), for higher layers.
    pub kind: String,
    /// Whatever the flow needs to finish (nonce, PKCE verifier, where to return, ...).
    pub data: serde_json::Value,
    pub created_at: UnixTime,
    /// From this time on (`expires_at <= now`) it is gone for every method (as if deleted).
    pub expires_at: UnixTime,
}

/// A project: the first component of repository names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    pub name: String,
    pub public: bool,
    pub created_at: UnixTime,
}

/// A member of a project: a user or a group, with a role. The role is stored by its name
/// (`developer`, ...); berth-access decides what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub project: String,
    /// `user:<name>` or `group:<name>` (see [`member_key`]).
    pub member: String,
    pub role: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// The key of a member: `user:<name>` or `group:<name>`.
pub fn member_key(group: bool, name: &str) -> String {
    format!("{}:{name}", if group { "group" } else { "user" })
}

/// The kind (`true`: a group) and the name of a member key made by [`member_key`].
pub fn parse_member_key(key: &str) -> Option<(bool, &str)> {
    match key.split_once(':')? {
        ("user", name) => Some((false, name)),
        ("group", name) => Some((true, name)),
        _ => None,
    }
}

/// Most member keys one [`MetadataStore::memberships`] call looks up (a user and their groups).
pub const MAX_MEMBER_KEYS: usize = 1024;

/// A robot account. Exactly one of `secret_hash` (a static-secret robot) and `identity_provider`
/// (a federated robot) may be set; with neither it cannot log in.
#[derive(Debug, Clone, PartialEq)]
pub struct RobotRecord {
    /// `robot$<project>+<name>` or `robot$<name>`.
    pub name: String,
    pub project: Option<String>,
    pub description: String,
    pub disabled: bool,
    pub expires_at: Option<UnixTime>,
    pub secret_hash: Option<String>,
    pub identity_provider: Option<String>,
    /// JSON array of rule specs (validated by higher layers).
    pub rules: serde_json::Value,
    /// JSON array of permission specs (validated by higher layers).
    pub permissions: serde_json::Value,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// An identity provider document.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityProviderRecord {
    pub name: String,
    /// The whole provider document (validated by higher layers).
    pub config: serde_json::Value,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A declarative batch for [`MetadataStore::apply`]: every object is created or brought to the
/// given state; nothing absent from the batch is touched. The records' `created_at` and
/// `updated_at` are ignored (the store sets them from `apply`'s `now`).
#[derive(Debug, Clone, Copy)]
pub struct ApplyBatch<'a> {
    pub projects: &'a [ProjectRecord],
    pub identity_providers: &'a [IdentityProviderRecord],
    /// For a static-secret robot (no `identity_provider`), `secret_hash` is the hash to store if
    /// the robot has none yet (the caller made a fresh secret for that case); otherwise ignored.
    pub robots: &'a [RobotRecord],
    /// Project members (their project must exist or be in `projects`), written after the
    /// projects. A member of a missing project is a [`MetaError::Conflict`] naming it.
    pub members: &'a [MemberRecord],
}

/// What [`MetadataStore::apply`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Updated,
    /// It already matched the batch; nothing was written.
    Unchanged,
}

impl ApplyAction {
    /// `created`, `updated` or `unchanged` (the admin API's wording).
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Updated => "updated",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// What [`MetadataStore::apply`] did, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Same order as the batch.
    pub projects: Vec<ApplyAction>,
    /// Same order as the batch.
    pub identity_providers: Vec<ApplyAction>,
    /// Per robot: what happened, and whether the `secret_hash` given in the batch was stored
    /// (true only for a static-secret robot that had no stored hash).
    pub robots: Vec<(ApplyAction, bool)>,
    /// Same order as the batch.
    pub members: Vec<ApplyAction>,
}

/// The outcome of deleting something others may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// Not deleted; the message says what still refers to it.
    InUse(String),
}

/// One audit log event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Assigned by the store; ignored when appending.
    pub id: i64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `token`, `login`, `pull`, `push` or `delete`.
    pub action: String,
    /// `ok`, `denied` or `error`.
    pub result: String,
    /// The user, the robots (comma separated) or `anonymous`.
    pub principal: String,
    pub robots: Vec<String>,
    pub provider: Option<String>,
    /// The OIDC token's `sub` and `jti`.
    pub subject: Option<String>,
    pub jti: Option<String>,
    /// The provider's identifying claims (a JSON object).
    pub claims: Option<serde_json::Value>,
    pub repository: Option<String>,
    /// A tag or digest.
    pub reference: Option<String>,
    pub client: Option<String>,
    pub message: Option<String>,
}

/// Filters of an audit query; all optional, combined with AND. Results come newest first (by id,
/// descending); the next page is `before_id: Some(<last id of this page>)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events at or after this time (Unix milliseconds, inclusive).
    pub since_ms: Option<i64>,
    /// Only events before this time (Unix milliseconds, exclusive).
    pub until_ms: Option<i64>,
    /// Events in which this robot took part (an exact element of [`AuditEvent::robots`]), or
    /// whose principal is exactly this (a user, `anonymous`).
    pub robot: Option<String>,
    pub repository: Option<String>,
    pub provider: Option<String>,
    pub result: Option<String>,
    pub action: Option<String>,
    /// Only events with an id below this one (the next page).
    pub before_id: Option<i64>,
    /// At most this many: 0 means [`AUDIT_DEFAULT_LIMIT`], more than [`AUDIT_MAX_LIMIT`] means
    /// that.
    pub limit: u32,
}

/// The number of audit events a query with `limit: 0` returns.
pub const AUDIT_DEFAULT_LIMIT: u32 = 100;
/// The most audit events one query returns.
pub const AUDIT_MAX_LIMIT: u32 = 1000;

/// One page of a listing (`n`/`last` pagination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    /// Return only entries sorting strictly after this one.
    pub last: Option<&'a str>,
    /// At most this many entries (None: all).
    pub n: Option<u32>,
}

/// What one garbage-collection pass over the metadata removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Repository links removed (blobs no manifest of that repository references).
    pub links_removed: u64,
    /// Blob records removed; the caller deletes these storage keys.
    pub deleted_keys: Vec<String>,
    /// Upload sessions removed; the caller deletes their data.
    pub stale_uploads: Vec<String>,
}

// ---- export and import (`berth migrate`) ----

/// A table that an export walks, in the order an import writes them (a row's parents first:
/// users before their tokens, projects and identity providers before robots, blob records before
/// their links, manifests before their tags). Transient state has no table here and is never
/// copied: upload sessions (a client restarts an upload that was running), failed-login counters
/// (they only matter for their window) and logins in progress (`auth_requests`: a person whose
/// login was running starts it again); nor is the federation generation, a counter every process
/// only compares with itself (an import increases the destination's, so that its replicas
/// reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Key-value settings, among them the registry's signing key (`registry_signing_key`: tokens
    /// and logins keep working after a move) and `bootstrap_admin_hash`. Key: the setting's key.
    Settings,
    /// Users with their password hashes, OpenID identities and groups. Key: the name.
    Users,
    /// The tokens Berth issued to users (`user_tokens`), with their secret and refresh tokens.
    /// Key: the id. A token may refer to a parent token that sorts after it: see
    /// [`MetadataStore::import`].
    Tokens,
    /// Key: the name.
    Projects,
    /// Key: the name.
    IdentityProviders,
    /// Project members. Key: (project, member).
    Members,
    /// Robot accounts with their secret hashes. Key: the name.
    Robots,
    /// Blob records (digest, size, storage key, last use). Key: the digest.
    Blobs,
    /// Repository → blob links. Key: (repository, digest).
    BlobLinks,
    /// Manifests with their bytes, media type, subject, artifact type, annotations, creation time
    /// and what they reference. Key: (repository, digest).
    Manifests,
    /// Key: (repository, tag).
    Tags,
    /// The audit log, with its ids. Key: the id.
    AuditEvents,
}

impl Table {
    /// Every table, in import order.
    pub const ALL: [Table; 12] = [
        Table::Settings,
        Table::Users,
        Table::Tokens,
        Table::Projects,
        Table::Members,
        Table::IdentityProviders,
        Table::Robots,
        Table::Blobs,
        Table::BlobLinks,
        Table::Manifests,
        Table::Tags,
        Table::AuditEvents,
    ];

    /// The table's name in messages and reports (`blob_links`, `audit_events`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Table::Settings => "settings",
            Table::Users => "users",
            Table::Tokens => "user_tokens",
            Table::Projects => "projects",
            Table::Members => "project_members",
            Table::IdentityProviders => "identity_providers",
            Table::Robots => "robots",
            Table::Blobs => "blobs",
            Table::BlobLinks => "blob_links",
            Table::Manifests => "manifests",
            Table::Tags => "tags",
            Table::AuditEvents => "audit_events",
        }
    }
}

/// The key of an exported row: what orders a table's export and names a row for
/// [`MetadataStore::prune`]. Names and digests compare by their bytes on every backend (SQLite's
/// BINARY, PostgreSQL's `"C"`), a pair first by its first element, so two stores agree on which
/// keys lie in a range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    /// Settings, users, projects, identity providers, robots (their name or key); tokens (their
    /// id); blobs (digest).
    Name(String),
    /// Blob links and manifests (repository, digest); tags (repository, tag).
    Pair(String, String),
    /// Audit events.
    Id(i64),
}

/// A blob record as exported: the record itself, not seen from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobExport {
    pub digest: Digest,
    pub size: u64,
    /// The key in the exporting store's blob storage. An import into a store whose blob
    /// storage is another one needs the key the bytes got there (see [`MetadataStore::import`]).
    pub storage_key: String,
    pub last_used: UnixTime,
}

/// A repository → blob link as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLinkExport {
    pub repo: RepoName,
    pub digest: Digest,
    pub last_used: UnixTime,
}

/// A manifest as exported: everything its row and its references hold, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestExport {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    /// The annotations as stored (a JSON object's text), not re-serialised.
    pub annotations: Option<String>,
    pub created: UnixTime,
    /// The blobs (config, layers) it references, by digest order.
    pub blobs: Vec<Digest>,
    /// The child manifests it references, by digest order.
    pub manifests: Vec<Digest>,
}

/// A tag as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagExport {
    pub repo: RepoName,
    pub tag: Tag,
    pub manifest: Digest,
    pub updated: UnixTime,
}

/// One row of one [`Table`], exactly as stored (times, ids, hashes and keys included).
#[derive(Debug, Clone, PartialEq)]
pub enum ExportRow {
    Setting { key: String, value: String },
    User(UserRecord),
    Token(TokenRecord),
    Project(ProjectRecord),
    Member(MemberRecord),
    IdentityProvider(IdentityProviderRecord),
    Robot(RobotRecord),
    Blob(BlobExport),
    BlobLink(BlobLinkExport),
    Manifest(ManifestExport),
    Tag(TagExport),
    /// Its `id` is kept by an import.
    AuditEvent(AuditEvent),
}

impl ExportRow {
    pub fn table(&self) -> Table {
        match self {
            ExportRow::Setting { .. } => Table::Settings,
            ExportRow::User(_) => Table::Users,
            ExportRow::Token(_) => Table::Tokens,
            ExportRow::Project(_) => Table::Projects,
            ExportRow::Member(_) => Table::Members,
            ExportRow::IdentityProvider(_) => Table::IdentityProviders,
            ExportRow::Robot(_) => Table::Robots,
            ExportRow::Blob(_) => Table::Blobs,
            ExportRow::BlobLink(_) => Table::BlobLinks,
            ExportRow::Manifest(_) => Table::Manifests,
            ExportRow::Tag(_) => Table::Tags,
            ExportRow::AuditEvent(_) => Table::AuditEvents,
        }
    }

    /// The row's key in its table.
    pub fn key(&self) -> RowKey {
        match self {
            ExportRow::Setting { key, .. } => RowKey::Name(key.clone()),
            ExportRow::User(u) => RowKey::Name(u.name.clone()),
            ExportRow::Token(t) => RowKey::Name(t.id.clone()),
            ExportRow::Project(p) => RowKey::Name(p.name.clone()),
            ExportRow::Member(m) => RowKey::Pair(m.project.clone(), m.member.clone()),
            ExportRow::IdentityProvider(p) => RowKey::Name(p.name.clone()),
            ExportRow::Robot(r) => RowKey::Name(r.name.clone()),
            ExportRow::Blob(b) => RowKey::Name(b.digest.as_str().to_owned()),
            ExportRow::BlobLink(l) => RowKey::Pair(l.repo.as_str().to_owned(), l.digest.as_str().to_owned()),
            ExportRow::Manifest(m) => RowKey::Pair(m.repo.as_str().to_owned(), m.digest.as_str().to_owned()),
            ExportRow::Tag(t) => RowKey::Pair(t.repo.as_str().to_owned(), t.tag.as_str().to_owned()),
            ExportRow::AuditEvent(e) => RowKey::Id(e.id),
        }
    }
}

/// What one [`MetadataStore::import`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Rows written (created or brought to the exported state).
    pub imported: u64,
    /// Rows not written because a row they need is missing here (a link whose blob record, a tag
    /// whose manifest, a robot whose project or provider, a member whose project, a token whose
    /// user or parent token (one sorting before it) is not in this store), one line each. Only a
    /// source that changed between the pages of an export causes this; the next run copies them.
    pub skipped: Vec<String>,
    /// Rows not written *yet*: they refer to a row of their own table that is not here but sorts
    /// after them, so a later page of the same walk brings it (a token whose parent token has a
    /// greater id). The caller imports these rows again once the walk of their table is over
    /// (and again while that writes some of them); what is still deferred then is skipped.
    pub deferred: Vec<RowKey>,
    /// Storage keys of imported blob records that were not stored because this store already
    /// had a record of that digest (its own key stays): the caller deletes those objects.
    pub unused_keys: Vec<String>,
}

/// What one [`MetadataStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Rows of the table removed (not counting those removed with them).
    pub removed: u64,
    /// Storage keys of removed blob records: the caller deletes those objects.
    pub deleted_keys: Vec<String>,
}

/// Rows per table, for comparing two stores after a copy ([`MetadataStore::row_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub settings: u64,
    pub users: u64,
    /// The tokens issued to users.
    pub tokens: u64,
    pub projects: u64,
    pub members: u64,
    pub identity_providers: u64,
    pub robots: u64,
    pub blobs: u64,
    /// The sizes of every blob record, added up.
    pub blob_bytes: u64,
    /// Repositories that exist (have a manifest or a blob link).
    pub repositories: u64,
    pub blob_links: u64,
    pub manifests: u64,
    /// What manifests reference (blobs and child manifests), one row each.
    pub manifest_references: u64,
    pub tags: u64,
    pub audit_events: u64,
    /// The names each audit event is found by (its robots and principal).
    pub audit_names: u64,
}

impl RowCounts {
    /// Each count with its name, in import order.
    pub fn entries(&self) -> [(&'static str, u64); 16] {
        [
            ("settings", self.settings),
            ("users", self.users),
            ("user_tokens", self.tokens),
            ("projects", self.projects),
            ("project_members", self.members),
            ("identity_providers", self.identity_providers),
            ("robots", self.robots),
            ("blobs", self.blobs),
            ("blob_bytes", self.blob_bytes),
            ("repositories", self.repositories),
            ("blob_links", self.blob_links),
            ("manifests", self.manifests),
            ("manifest_references", self.manifest_references),
            ("tags", self.tags),
            ("audit_events", self.audit_events),
            ("audit_names", self.audit_names),
        ]
    }

    /// Whether every count is 0 (a store nothing was ever written to).
    pub fn is_empty(&self) -> bool {
        self.entries().iter().all(|(_, n)| *n == 0)
    }
}

/// The metadata store. Implementations must be safe for several Berth processes sharing one
/// database: no method may rely on state held only in this process.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    // ---- blobs ----

    /// The blob record if `digest` is linked to `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>>;

    /// Records a verified blob that was just written under `new_key`, and links it to `repo`,
    /// in one transaction. If the digest already has a record, the existing key is kept (and
    /// returned so the caller can delete `new_key`); either way the link's and blob's
    /// last-used time become `now`.
    async fn commit_blob(&self, repo: &RepoName, digest: &Digest, size: u64, new_key: &str, now: UnixTime) -> Result<BlobCommit>;

    /// Cross-repository mount: links an existing blob of `from` to `repo`. Returns the record, or
    /// None when `from` has no such blob (the caller then starts a normal upload).
    async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest, now: UnixTime) -> Result<Option<BlobRecord>>;

    /// Removes the link of `digest` to `repo`. Returns false if there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    // ---- manifests and tags ----

    /// In one transaction: checks that every blob of `m.parsed.blobs` is linked to `repo` and every
    /// child of `m.parsed.manifests` is a manifest of `repo` (else returns `Missing`, storing
    /// nothing); stores the manifest (idempotent for the same digest), its references, its subject
    /// and artifact type; touches the referenced links' last-used time; points every tag of
    /// `m.tags` at it (moving tags that named another manifest). A refused or failed put sets
    /// none of the tags.
    async fn put_manifest(&self, repo: &RepoName, m: NewManifest<'_>, now: UnixTime) -> Result<PutManifestOutcome>;

    /// The manifest a tag or digest names in `repo`.
    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>>;

    /// Deletes a manifest by digest, with every tag pointing at it. Returns false if absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Deletes one tag (the manifest stays). Returns false if absent.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Tags of `repo` in lexical order, paginated. None when the repository is unknown.
    async fn list_tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>>;

    /// Repository names in lexical order, paginated. A repository exists while it has a manifest,
    /// a tag or a blob link.
    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>>;

    /// Manifests of `repo` whose subject is `subject`, optionally only those of `artifact_type`.
    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>>;

    // ---- upload sessions ----

    //
    // A write to an upload (one PATCH, or the final PUT) first claims it with a token of its own
    // (unique per claim, e.g. a random UUID) and a lease end, writes its bytes to the blob store
    // after `offset`, then releases it with the new offset and hash state. The claim is what
    // serialises writes to one upload across every process on the store: a second writer gets
    // `Busy` until the first releases or its lease ends, and a writer whose lease was taken over
    // cannot record anything (its release fails, so the bytes it wrote past the recorded offset
    // are ignored and overwritten by the next write).

    /// Creates a session of `repo` at offset 0, with an empty hash state, no parts and no lease.
    async fn create_upload(&self, id: &str, repo: &RepoName, now: UnixTime) -> Result<()>;
    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>>;
    /// Marks the session as active at `now` (never moves `updated` back).
    async fn touch_upload(&self, id: &str, now: UnixTime) -> Result<()>;
    /// Takes the upload for one write (or for the final commit): succeeds only if it belongs to
    /// `repo`, no unexpired lease is held (`lease_until > now`), and (when `expected_offset` is
    /// Some) its offset equals it. One atomic statement/transaction: of any number of concurrent
    /// claims, from any number of processes, exactly one wins. A successful claim also marks the
    /// session active (`updated` becomes at least `now`) and returns the record as claimed.
    async fn claim_upload(&self, id: &str, repo: &RepoName, expected_offset: Option<u64>, token: &str, lease_until: UnixTime, now: UnixTime) -> Result<UploadClaim>;
    /// Extends the caller's lease; false if it no longer holds it (another claim took the upload
    /// over, it was released, or the session is gone). A lease that ended but that nobody took
    /// over is still the caller's.
    async fn renew_upload_claim(&self, id: &str, token: &str, lease_until: UnixTime) -> Result<bool>;
    /// Compare-and-set: if `token` still holds the lease, records the new offset, hash state and
    /// parts, sets `updated = now` and clears the lease; false (nothing changed) otherwise. As for
    /// renewing, a lease that ended but that nobody took over is still the caller's.
    async fn release_upload(&self, id: &str, token: &str, offset: u64, hash_state: &[u8], parts: u32, now: UnixTime) -> Result<bool>;
    /// Removes the session record. Returns false if absent.
    async fn delete_upload(&self, id: &str) -> Result<bool>;

    // ---- users ----

    //
    // Every change to a user increases the federation generation in the same transaction (but a
    // login's `update_user_login` that leaves the groups as they were), so the login caches of
    // every replica (keyed by it) drop a changed password, a disabled user or a deleted one within
    // their polling interval. The store never lets a write remove the last enabled admin: a
    // `put_user` or `delete_user` that would leave no enabled admin while there was one is a
    // [`MetaError::Conflict`] and changes nothing. An OpenID identity (issuer and subject) links
    // at most one user: a write that would link it to a second one is a [`MetaError::Conflict`]
    // naming the user that has it, and changes nothing.

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Creates the user, or replaces every field of an existing one but its creation time (which
    /// it keeps). Callers that change some fields of a stored user pass the rest as read.
    async fn put_user(&self, user: &UserRecord) -> Result<()>;
    /// All users, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Deletes a user, and its tokens with it; false if there was none.
    async fn delete_user(&self, name: &str) -> Result<bool>;
    async fn count_users(&self) -> Result<u64>;
    /// The user linked to this OpenID identity (issuer compared exactly, as stored).
    async fn get_user_by_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>>;
    /// Creates a user only if no user has its name (false: the name is taken, nothing changed).
    /// An identity already linked to another user is a [`MetaError::Conflict`] naming that user
    /// (checked first: even when the name is taken too). Moves the federation generation when it
    /// creates.
    async fn create_user(&self, user: &UserRecord) -> Result<bool>;
    /// After a login or a background re-check at the identity provider: sets the user's groups
    /// (and email, when given) and `last_login_at` (when given) without touching anything else
    /// (a concurrent admin change is not lost). Moves the federation generation only if the
    /// groups changed. Returns the updated record; None if there is no such user.
    async fn update_user_login(&self, name: &str, groups: &[String], email: Option<&str>, last_login_at: Option<UnixTime>) -> Result<Option<UserRecord>>;

    // ---- tokens: credentials Berth issued to users ----
    //
    // Deleting a user deletes its tokens; deleting a token deletes the tokens whose parent it is.

    /// Stores a new token. Its user (and parent, if any) must exist, else [`MetaError::Conflict`]
    /// naming what is missing; a parent of another user and an id already used are Conflicts
    /// too. Does not move the generation (nothing lost access).
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// A user's tokens of the given kinds (all kinds if empty), oldest first (then by id).
    async fn list_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<Vec<TokenRecord>>;
    /// Deletes a token and its children (false: no such token). Moves the federation generation,
    /// so every replica's caches drop it at once.
    async fn delete_token(&self, id: &str) -> Result<bool>;
    /// Deletes all of a user's tokens of the given kinds (all if empty), with their children; how
    /// many went (children counted). Moves the generation if any went.
    async fn delete_user_tokens(&self, user: &str, kinds: &[TokenKind]) -> Result<u64>;
    /// Sets `last_used_at` to `now`, never back (replicas' clocks differ; callers throttle this).
    /// Nothing happens for an unknown token. No generation move.
    async fn touch_token(&self, id: &str, now: UnixTime) -> Result<()>;
    /// After a re-check at the identity provider: sets the refresh token (it may rotate; the
    /// value given is stored, None included, and a token without one is no longer re-checked)
    /// and `checked_at`. No generation move. False: no such token.
    async fn update_token_check(&self, id: &str, refresh_token: Option<&str>, checked_at: UnixTime) -> Result<bool>;
    /// Claims a token's next re-check: sets `checked_at` to `now` only if it is still `seen`
    /// (None: never checked), atomically. Of replicas that found the same token due, exactly one
    /// gets true and uses its refresh token (identity providers rotate refresh tokens and revoke
    /// the whole grant when an old one is used again). No generation move.
    async fn claim_token_check(&self, id: &str, seen: Option<UnixTime>, now: UnixTime) -> Result<bool>;
    /// Tokens holding a refresh token whose `checked_at` (or, never checked, `created_at`) is
    /// before `before` and that have not expired at `now`, oldest check first (then by id), at
    /// most `limit`.
    async fn tokens_to_check(&self, before: UnixTime, now: UnixTime, limit: u32) -> Result<Vec<TokenRecord>>;
    /// Deletes tokens expired at `now` (`expires_at <= now`), with their children; how many went
    /// (children counted). No generation move (expired tokens are refused anyway). Large prunes
    /// are done in several short transactions.
    async fn prune_tokens(&self, now: UnixTime) -> Result<u64>;

    // ---- logins in progress ----

    /// Stores a login in progress; false (nothing changed) if an unexpired request has its id
    /// (an expired one is replaced). Refused with [`MetaError::Conflict`] when `max_pending`
    /// unexpired requests exist already (a bound on what anonymous callers can make the store
    /// hold); the count and the insert are one transaction that concurrent puts from any process
    /// wait for, so the bound is exact.
    async fn put_auth_request(&self, request: &AuthRequest, max_pending: u64, now: UnixTime) -> Result<bool>;
    /// An unexpired request.
    async fn get_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>>;
    /// Replaces an unexpired request's data (a device authorization that was approved); false:
    /// none (expired, taken, never existed).
    async fn update_auth_request(&self, id: &str, data: &serde_json::Value, now: UnixTime) -> Result<bool>;
    /// Removes and returns an unexpired request, atomically: of concurrent takers (any process)
    /// exactly one gets it, so a replayed `state` finds nothing.
    async fn take_auth_request(&self, id: &str, now: UnixTime) -> Result<Option<AuthRequest>>;
    /// Deletes requests expired at `now`; how many went.
    async fn prune_auth_requests(&self, now: UnixTime) -> Result<u64>;

    // ---- key-value settings (the registry's signing key, ...) ----

    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets `key` to `value` only if it has no value yet; returns the value now stored, so that
    /// replicas starting together agree on one.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;

    // ---- garbage collection ----

    /// One pass: removes repository links not referenced by any manifest of that repository and
    /// unused since `cutoff`; then removes blob records with no links left and unused since
    /// `cutoff`, returning their storage keys; then removes upload sessions not touched since
    /// `upload_cutoff`. Each deletion re-checks its condition inside its transaction, so a push
    /// running at the same time never loses a blob it has linked or referenced.
    async fn collect_garbage(&self, cutoff: UnixTime, upload_cutoff: UnixTime) -> Result<GcReport>;

    /// True if some blob record points at `key` (used to sweep orphaned objects).
    async fn key_in_use(&self, key: &str) -> Result<bool>;

    // ---- projects, robots, identity providers (workload identity federation) ----
    //
    // Every call that changes one of these rows increases the federation generation in the same
    // transaction; a call that changes nothing (creating an existing project, deleting something
    // absent, a refused write) leaves it. The store enforces the references between them; the
    // JSON documents (rules, permissions, provider configs) are validated by higher layers.

    /// Creates a project; false (and nothing changes) if it already exists.
    async fn create_project(&self, project: &ProjectRecord) -> Result<bool>;
    /// Creates or updates a project (an existing project keeps its creation time).
    async fn put_project(&self, project: &ProjectRecord) -> Result<()>;
    async fn get_project(&self, name: &str) -> Result<Option<ProjectRecord>>;
    /// All projects, by name.
    async fn list_projects(&self) -> Result<Vec<ProjectRecord>>;
    /// Deletes a project, or refuses with [`DeleteOutcome::InUse`] (naming some of them) while
    /// robots belong to it. Repositories do not block it: they are not rows of the project and
    /// simply are no longer in one.
    async fn delete_project(&self, name: &str) -> Result<DeleteOutcome>;

    /// Adds a member to a project or changes its role (an existing member keeps its creation
    /// time). A member of an unknown project is a [`MetaError::Conflict`]. Moves the federation
    /// generation (a change of access). A project's members go when it is deleted.
    async fn put_member(&self, member: &MemberRecord) -> Result<()>;
    /// Removes a member (false: it was not one). Moves the federation generation.
    async fn delete_member(&self, project: &str, member: &str) -> Result<bool>;
    /// A project's members, by member key.
    async fn list_members(&self, project: &str) -> Result<Vec<MemberRecord>>;
    /// Every membership held by any of `members` (a person's `user:<name>` and `group:<name>`
    /// keys; at most [`MAX_MEMBER_KEYS`], else [`MetaError::Conflict`]), by project then key.
    async fn memberships(&self, members: &[String]) -> Result<Vec<MemberRecord>>;

    /// Creates or replaces a robot by name (an existing robot keeps its creation time). A robot of
    /// an unknown project or identity provider is a [`MetaError::Conflict`] whose message names
    /// what is missing; so is one with both a secret and a provider. A refused write stores
    /// nothing.
    async fn put_robot(&self, robot: &RobotRecord) -> Result<()>;
    /// Creates a robot only if none has its name, atomically (false: it exists, nothing changed).
    /// Same reference checks as put_robot (Conflict naming the missing project/provider), made
    /// first: a robot of an unknown project is refused even when the name is taken. Of any
    /// number of concurrent creates of one name, from any number of processes, exactly one
    /// returns true and its record is the one stored.
    async fn create_robot(&self, robot: &RobotRecord) -> Result<bool>;
    async fn get_robot(&self, name: &str) -> Result<Option<RobotRecord>>;
    /// All robots (None) or those of one project, by name.
    async fn list_robots(&self, project: Option<&str>) -> Result<Vec<RobotRecord>>;
    /// The robots federated with one identity provider, by name (to build its matcher).
    async fn list_robots_by_provider(&self, provider: &str) -> Result<Vec<RobotRecord>>;
    /// Deletes a robot; false if there was none.
    async fn delete_robot(&self, name: &str) -> Result<bool>;

    /// Creates or replaces an identity provider (an existing one keeps its creation time).
    async fn put_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<()>;
    /// Creates an identity provider only if none has its name, atomically (false: it exists,
    /// nothing changed). Of concurrent creates of one name exactly one returns true, as for
    /// [`create_robot`](MetadataStore::create_robot).
    async fn create_identity_provider(&self, provider: &IdentityProviderRecord) -> Result<bool>;
    async fn get_identity_provider(&self, name: &str) -> Result<Option<IdentityProviderRecord>>;
    /// All identity providers, by name.
    async fn list_identity_providers(&self) -> Result<Vec<IdentityProviderRecord>>;
    /// Deletes an identity provider, or refuses with [`DeleteOutcome::InUse`] (naming some of
    /// them) while robots are federated with it.
    async fn delete_identity_provider(&self, name: &str) -> Result<DeleteOutcome>;

    /// Writes projects, then identity providers, then robots in ONE transaction: any error (a
    /// robot of an unknown project, ...) writes nothing. Each object is compared with what is
    /// stored inside the transaction (so with what earlier objects of the batch wrote): a project
    /// is unchanged when `public` is equal; a provider when `config` is equal; a robot when
    /// project, description, disabled, expires_at, identity_provider, rules and permissions are
    /// equal and (it is federated or it already has a secret hash). A static robot that already
    /// has a secret hash keeps it (the batch's hash is then ignored); one without gets the
    /// batch's `secret_hash`; a federated robot has none. Robots get the checks of
    /// [`put_robot`](MetadataStore::put_robot) (a [`MetaError::Conflict`] naming what is missing).
    /// Created objects get `created_at = now`; existing objects keep their creation time; every
    /// written robot and provider gets `updated_at = now`. The federation generation increases
    /// once if anything changed, not at all otherwise.
    async fn apply(&self, batch: ApplyBatch<'_>, now: UnixTime) -> Result<ApplyOutcome>;

    /// A counter that every change to projects, robots, identity providers or users increases, in
    /// the same transaction. Replicas poll it (one single-row read) to know when to reload their
    /// compiled rules.
    async fn federation_generation(&self) -> Result<i64>;

    // ---- audit log ----

    /// Appends events in one transaction (the background writer's batches, up to ~1,000). Ids
    /// are assigned by the store, increasing and never reused; the `id` of each event is ignored.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;
    /// Events matching the query, newest (highest id) first.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>>;
    /// Deletes events whose time is before `before_ms`; returns how many. Large prunes are done in
    /// several short transactions.
    async fn prune_audit(&self, before_ms: i64) -> Result<u64>;

    // ---- failed-login counters (rate limiting, shared by replicas) ----
    //
    // Keys are opaque (`addr:<ip>`, `account:<name>`); windows are identified by their start.

    /// Counts one failure for `key` in the window starting at `window_start`, atomically, and
    /// returns the count including it.
    async fn record_login_failure(&self, key: &str, window_start: UnixTime) -> Result<u32>;
    /// Takes back one failure of `key` in the window starting at `window_start` (a login that was
    /// counted before its password check and then succeeded); never below zero, and nothing
    /// happens for a window that was never counted.
    async fn forgive_login_failure(&self, key: &str, window_start: UnixTime) -> Result<()>;
    /// The failures counted for `key` in the window starting at `window_start` (0 if none).
    async fn login_failures(&self, key: &str, window_start: UnixTime) -> Result<u32>;
    /// Forgets windows that started before `before` (of every key); returns how many.
    async fn prune_login_failures(&self, before: UnixTime) -> Result<u64>;

    // ---- export and import (`berth migrate`) ----
    //
    // A copy walks each [`Table`] of the source in key order, page by page: `export` a page,
    // `prune` from the destination the rows of the page's key range that the page does not hold
    // (so rows deleted at the source since an earlier run go), and `import` the page. After a
    // whole walk the destination's table equals the source's as it was read; a rerun writes
    // only what changed. Nothing here is one transaction across pages: a source that keeps
    // changing meanwhile is caught up by the next run.

    /// One page of `table` in key order ([`RowKey`]): the rows whose key sorts after `after`
    /// (from the first when None), at most `limit` (at least 1). Every row exactly as stored.
    /// Reads only: a store opened read-only exports.
    async fn export(&self, table: Table, after: Option<&RowKey>, limit: u32) -> Result<Vec<ExportRow>>;

    /// Writes `rows` (of any tables, in the order given: parents first) as they are, in one
    /// transaction: times, ids, hashes and documents are kept, nothing is validated again (they
    /// were when first written). Idempotent: an existing row (same key) is brought to the
    /// exported state; importing the same rows twice changes nothing the second time.
    /// - A blob record keeps the storage key this store already has for its digest (the bytes
    ///   are the same); otherwise it is stored with the row's `storage_key`, which must be a key
    ///   of *this* store's blob storage: the caller copies the bytes first and puts the key they
    ///   got into the row (a key is never reused, so one store's keys mean nothing in another).
    ///   The keys not stored come back in [`ImportOutcome::unused_keys`].
    /// - A manifest's references are replaced by the row's; a repository row is created when
    ///   needed; an audit event keeps its id (later appends get higher ids) and its names.
    /// - A row whose parent is missing here (link → blob record, tag → manifest, robot →
    ///   project or provider, member → project, token → user) is skipped and reported, not an
    ///   error.
    /// - Tokens are written after the other rows of `rows`, parents before children whatever
    ///   their order in `rows`. A token whose parent is neither here nor among `rows` is deferred
    ///   ([`ImportOutcome::deferred`]) when the parent's id sorts after its own (a later page of
    ///   the walk brings it), else skipped.
    /// - Users are written without the last-admin rule (they are a copy). A user's identity
    ///   moves to it from another user that has it here (that row is the destination's old
    ///   state: it is brought to the source's, or removed, when the walk gets to it).
    /// - A write to users, tokens, projects, members, providers or robots increases the
    ///   federation generation once.
    async fn import(&self, rows: &[ExportRow]) -> Result<ImportOutcome>;

    /// Deletes, in one transaction, the rows of `table` whose key is after `after` (None: from
    /// the first) and at most `upto` (None: to the last) and not in `keep`: the rows a source's
    /// page covering that range no longer has. Rows that cannot exist without a removed row go
    /// with it (a removed blob record's links; a manifest's tags and references; a project's
    /// robots and members; a provider's robots; a user's tokens; a token's children; an event's
    /// names). Returns the storage keys of removed blob records, whose objects the caller
    /// deletes. A `RowKey` of another shape than `table`'s is a [`MetaError::Conflict`].
    async fn prune(&self, table: Table, after: Option<&RowKey>, upto: Option<&RowKey>, keep: &[RowKey]) -> Result<PruneOutcome>;

    /// The blob records of these digests that exist, whatever repository links them (in no
    /// particular order).
    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<BlobRecord>>;

    /// The rows of every table, counted in one snapshot.
    async fn row_counts(&self) -> Result<RowCounts>;
}
