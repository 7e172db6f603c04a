//! Which backends hold the metadata and the blobs, chosen by an engine enum from the
//! configuration. Today: SQLite and a local folder (the embedded default under `data_dir`). A new
//! backend is a new variant here and an implementation of `MetadataStore` or `BlobStore` that
//! runs the shared test suite; nothing above the stores changes.

use std::path::PathBuf;
use std::sync::Arc;

use berth_blob::{BlobStore, FsBlobStore};
use berth_meta::{MetadataStore, SqliteStore};

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataEngine {
    /// An SQLite database file (WAL; several processes on one machine may share it).
    Sqlite { path: PathBuf },
}

/// Where the blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobEngine {
    /// A local folder (blobs under `blobs/`, uploads under `uploads/`).
    Filesystem { root: PathBuf },
}

/// Why a backend could not be opened: the message names the backend and what to check.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);

impl MetadataEngine {
    /// The embedded default: `<data_dir>/berth.db`.
    pub fn embedded(data_dir: &std::path::Path) -> MetadataEngine {
        MetadataEngine::Sqlite { path: data_dir.join("berth.db") }
    }

    /// Whether an installation exists there already (the offline commands refuse to create one).
    pub fn exists(&self) -> bool {
        match self {
            MetadataEngine::Sqlite { path } => path.is_file(),
        }
    }

    /// What it is, for logs and `/readyz` (no secrets).
    pub fn describe(&self) -> String {
        match self {
            MetadataEngine::Sqlite { path } => format!("sqlite {}", path.display()),
        }
    }

    pub async fn open(&self) -> Result<Arc<dyn MetadataStore>, OpenError> {
        match self {
            MetadataEngine::Sqlite { path } => {
                let store = SqliteStore::open(path).await.map_err(|e| OpenError(format!("cannot open the metadata database {}: {e}", path.display())))?;
                Ok(Arc::new(store))
            }
        }
    }
}

impl BlobEngine {
    /// The embedded default: the data folder itself.
    pub fn embedded(data_dir: &std::path::Path) -> BlobEngine {
        BlobEngine::Filesystem { root: data_dir.to_owned() }
    }

    /// What it is, for logs and `/readyz` (no secrets).
    pub fn describe(&self) -> String {
        match self {
            BlobEngine::Filesystem { root } => format!("filesystem {}", root.display()),
        }
    }

    pub fn open(&self) -> Result<Arc<dyn BlobStore>, OpenError> {
        match self {
            BlobEngine::Filesystem { root } => {
                let store = FsBlobStore::open(root.clone()).map_err(|e| OpenError(format!("cannot open blob storage in {}: {e}", root.display())))?;
                Ok(Arc::new(store))
            }
        }
    }
}
