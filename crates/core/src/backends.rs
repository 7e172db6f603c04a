//! Which backends hold the metadata and the blobs, chosen by an engine enum from the
//! configuration: the embedded default (SQLite and a local folder under `data_dir`), or
//! PostgreSQL and an S3 bucket shared by any number of replicas. A new backend is a new variant
//! here and an implementation of `MetadataStore` or `BlobStore` that runs the shared test suite;
//! nothing above the stores changes.
//!
//! The configuration names them by URL (`metadata_url`, `storage_url`):
//! - metadata: `sqlite:/path/to/berth.db` (or `sqlite://` + path), `postgres://user@host:port/db?...`
//! - storage: `file:/path/to/folder` (or `file://` + path), `s3://bucket/prefix?region=...&endpoint=...`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_blob::{BlobStore, FsBlobStore, S3Options, S3Store};
use berth_meta::{MetadataStore, PostgresOptions, PostgresStore, SqliteStore};

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataEngine {
    /// An SQLite database file (WAL; several processes on one machine may share it).
    Sqlite { path: PathBuf },
    /// A PostgreSQL database, shared by every replica.
    Postgres { options: PostgresOptions },
}

/// Where the blobs live.
#[derive(Debug, Clone)]
pub enum BlobEngine {
    /// A local folder (blobs under `blobs/`, uploads under `uploads/`).
    Filesystem { root: PathBuf },
    /// An S3 bucket (AWS or S3-compatible), shared by every replica.
    S3 { options: S3Options },
}

/// Why a backend could not be opened: the message names the backend and what to check.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);

/// The path of a `sqlite:` or `file:` URL: `scheme:/abs`, `scheme:rel`, `scheme:///abs`;
/// `scheme://host/...` is refused (no remote files).
fn path_of(url: &str, scheme: &str) -> Result<Option<PathBuf>, OpenError> {
    let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix(':')) else { return Ok(None) };
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(after) => {
            return Err(OpenError(format!(
                "{url:?}: {scheme}:// must be followed by an absolute path ({scheme}:///srv/berth/...), or write {scheme}:{after}"
            )))
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(OpenError(format!("{url:?}: no path after {scheme}:")));
    }
    if path.contains(['?', '#']) {
        return Err(OpenError(format!("{url:?}: a {scheme}: URL takes no parameters")));
    }
    Ok(Some(PathBuf::from(path)))
}

impl MetadataEngine {
    /// The embedded default: `<data_dir>/berth.db`.
    pub fn embedded(data_dir: &Path) -> MetadataEngine {
        MetadataEngine::Sqlite { path: data_dir.join("berth.db") }
    }

    /// From `metadata_url`: `sqlite:PATH` or `postgres://...` (also `postgresql://`). The pool
    /// settings of `pool` apply to PostgreSQL (its `url` is replaced).
    pub fn from_url(url: &str, pool: &PostgresOptions) -> Result<MetadataEngine, OpenError> {
        if let Some(path) = path_of(url, "sqlite")? {
            return Ok(MetadataEngine::Sqlite { path });
        }
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(MetadataEngine::Postgres { options: PostgresOptions { url: url.to_owned(), ..pool.clone() } }),
            _ => {
                let shown = url.split_once(':').map_or(url, |(scheme, _)| scheme);
                Err(OpenError(format!(
                    "metadata_url starting {shown:?}: unknown kind of database; write sqlite:/path/to/berth.db or postgres://user@host:5432/database"
                )))
            }
        }
    }

    /// Whether an installation exists there already (the offline commands refuse to create
    /// one). Reading it changes nothing.
    pub async fn exists(&self) -> Result<bool, OpenError> {
        match self {
            MetadataEngine::Sqlite { path } => Ok(path.is_file()),
            MetadataEngine::Postgres { options } => PostgresStore::installed(options).await.map_err(|e| OpenError(e.to_string())),
        }
    }

    /// What it is, for logs (no secrets: a PostgreSQL URL loses its password and parameters).
    pub fn describe(&self) -> String {
        match self {
            MetadataEngine::Sqlite { path } => format!("sqlite {}", path.display()),
            MetadataEngine::Postgres { options } => options.redacted(),
        }
    }

    /// The kind of backend, for `/readyz` (which anyone may read: no host names).
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataEngine::Sqlite { .. } => "sqlite",
            MetadataEngine::Postgres { .. } => "postgres",
        }
    }

    /// Opens the store, creating or migrating its schema. Errors are one line.
    pub async fn open(&self) -> Result<Arc<dyn MetadataStore>, OpenError> {
        match self {
            MetadataEngine::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| OpenError(format!("cannot create the folder {} for the metadata database: {e}", dir.display())))?;
                }
                let store = SqliteStore::open(path).await.map_err(|e| OpenError(format!("cannot open the metadata database {}: {e}", path.display())))?;
                Ok(Arc::new(store))
            }
            MetadataEngine::Postgres { options } => {
                let store = PostgresStore::connect(options).await.map_err(|e| OpenError(format!("metadata store: {e}")))?;
                Ok(Arc::new(store))
            }
        }
    }
}

impl BlobEngine {
    /// The embedded default: the data folder itself.
    pub fn embedded(data_dir: &Path) -> BlobEngine {
        BlobEngine::Filesystem { root: data_dir.to_owned() }
    }

    /// From `storage_url`: `file:PATH` or `s3://bucket/prefix?...`. `base` supplies what the
    /// URL does not hold (credentials, a CA for the endpoint) for S3.
    pub fn from_url(url: &str, base: &S3Options) -> Result<BlobEngine, OpenError> {
        if let Some(root) = path_of(url, "file")? {
            return Ok(BlobEngine::Filesystem { root });
        }
        if url.starts_with("s3://") || url.starts_with("S3://") {
            let from_url = S3Options::from_url(url).map_err(|e| OpenError(e.0))?;
            return Ok(BlobEngine::S3 {
                options: S3Options {
                    bucket: from_url.bucket,
                    prefix: from_url.prefix,
                    region: from_url.region.or_else(|| base.region.clone()),
                    endpoint: from_url.endpoint.or_else(|| base.endpoint.clone()),
                    path_style: from_url.path_style || base.path_style,
                    allow_http: from_url.allow_http || base.allow_http,
                    ..base.clone()
                },
            });
        }
        let shown = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        Err(OpenError(format!("storage_url starting {shown:?}: unknown kind of storage; write file:/path/to/folder or s3://bucket/prefix?region=...")))
    }

    /// What it is, for logs (no secrets).
    pub fn describe(&self) -> String {
        match self {
            BlobEngine::Filesystem { root } => format!("filesystem {}", root.display()),
            BlobEngine::S3 { options } => match &options.endpoint {
                Some(e) => format!("s3://{}/{} at {e}", options.bucket, options.prefix.trim_matches('/')),
                None => format!("s3://{}/{}", options.bucket, options.prefix.trim_matches('/')),
            },
        }
    }

    /// The kind of backend, for `/readyz`.
    pub fn kind(&self) -> &'static str {
        match self {
            BlobEngine::Filesystem { .. } => "filesystem",
            BlobEngine::S3 { .. } => "s3",
        }
    }

    /// Opens the store. S3 is checked first: reachable, the bucket exists, and the credentials
    /// hold every permission the store uses (the error names the missing ones).
    pub async fn open(&self) -> Result<Arc<dyn BlobStore>, OpenError> {
        match self {
            BlobEngine::Filesystem { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    OpenError(format!("cannot create the blob folder {}: {e}; set data_dir (BERTH_DATA_DIR) or storage_url to a writable folder", root.display()))
                })?;
                let store = FsBlobStore::open(root.clone()).map_err(|e| OpenError(format!("cannot open blob storage in {}: {e}", root.display())))?;
                Ok(Arc::new(store))
            }
            BlobEngine::S3 { options } => {
                let store = S3Store::connect(options.clone()).await.map_err(|e| OpenError(format!("blob storage: {e}")))?;
                Ok(Arc::new(store))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls() {
        let pool = PostgresOptions { max_connections: 7, ..PostgresOptions::new("") };
        let sqlite = |p: &str| MetadataEngine::Sqlite { path: PathBuf::from(p) };
        assert_eq!(MetadataEngine::from_url("sqlite:/srv/berth/berth.db", &pool).unwrap(), sqlite("/srv/berth/berth.db"));
        assert_eq!(MetadataEngine::from_url("sqlite:///srv/berth.db", &pool).unwrap(), sqlite("/srv/berth.db"));
        assert_eq!(MetadataEngine::from_url("sqlite:data/berth.db", &pool).unwrap(), sqlite("data/berth.db"));
        match MetadataEngine::from_url("postgres://berth:pw@db.internal:5432/berth?sslmode=require", &pool).unwrap() {
            MetadataEngine::Postgres { options } => {
                assert_eq!(options.url, "postgres://berth:pw@db.internal:5432/berth?sslmode=require");
                assert_eq!(options.max_connections, 7, "the pool settings apply");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(MetadataEngine::from_url("postgresql://h/db", &pool), Ok(MetadataEngine::Postgres { .. })));
        for (url, says) in [
            ("mysql://u:hunter2@h/db", "unknown kind of database"),
            ("sqlite://host/berth.db", "absolute path"),
            ("sqlite:", "no path"),
            ("sqlite:/x.db?mode=ro", "no parameters"),
            ("/srv/berth.db", "unknown kind"),
        ] {
            let e = MetadataEngine::from_url(url, &pool).unwrap_err().0;
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        let pg = MetadataEngine::from_url("postgres://berth:hunter2@db:5432/berth", &pool).unwrap();
        assert!(!pg.describe().contains("hunter2"), "{}", pg.describe());
        assert_eq!(pg.kind(), "postgres");
    }

    #[test]
    fn storage_urls() {
        let base = S3Options { access_key_id: Some("AK".into()), secret_access_key: Some("SK".into()), ca_pem: Some(b"pem".to_vec()), ..S3Options::default() };
        match BlobEngine::from_url("file:/srv/blobs", &base).unwrap() {
            BlobEngine::Filesystem { root } => assert_eq!(root, PathBuf::from("/srv/blobs")),
            other => panic!("{other:?}"),
        }
        match BlobEngine::from_url("s3://bucket/pre/fix?region=eu-central-1&endpoint=https://minio:9000&path_style=true", &base).unwrap() {
            BlobEngine::S3 { options } => {
                assert_eq!((options.bucket.as_str(), options.prefix.as_str()), ("bucket", "pre/fix"));
                assert_eq!(options.region.as_deref(), Some("eu-central-1"));
                assert!(options.path_style);
                assert_eq!(options.access_key_id.as_deref(), Some("AK"), "credentials from the configuration");
                assert_eq!(options.ca_pem.as_deref(), Some(&b"pem"[..]), "the CA from the configuration");
                let engine = BlobEngine::S3 { options };
                assert_eq!(engine.describe(), "s3://bucket/pre/fix at https://minio:9000");
                assert!(!format!("{engine:?}").contains("SK"), "Debug hides the secret");
            }
            other => panic!("{other:?}"),
        }
        for (url, says) in [("gs://bucket", "unknown kind of storage"), ("file://host/x", "absolute path"), ("s3://k:hunter2@b", "credentials do not belong")] {
            let e = BlobEngine::from_url(url, &base).unwrap_err().0;
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }
}
