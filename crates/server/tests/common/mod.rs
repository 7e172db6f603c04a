//! Setup shared by the in-process router tests: real SQLite and filesystem stores in a temp
//! folder, the users `admin` (administrator) and `plain`, and `berth_server::app` over them; the
//! response type the tests read, and the small helpers every file needs.

#![allow(dead_code)] // each test file uses a part of it
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use base64::Engine as _;
use berth_blob::FsBlobStore;
use berth_identity::TokenIssuer;
use berth_meta::{MetadataStore, SqliteStore, UserRecord};
use berth_server::{AnonymousAccess, AppState, ServerConfig};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use sha2::Digest as _;

/// The password of `admin` and `plain`.
pub const PW: &str = "admin-password";

/// A response, read whole.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub async fn read(resp: http::Response<Body>) -> Resp {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        Resp { status, headers, body }
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The first error's code.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
    /// The first error's message.
    pub fn message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().unwrap_or("").to_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

pub fn sha512(b: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(b)))
}

pub fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

/// The app over the stores in `dir` (created on first use, with `admin` and `plain`; reopened
/// as after a restart otherwise), and the metadata store.
pub async fn open_app(dir: &std::path::Path, anonymous: AnonymousAccess) -> (Router, Arc<SqliteStore>) {
    let meta = Arc::new(SqliteStore::open(&dir.join("berth.db")).await.unwrap());
    if meta.get_user("admin").await.unwrap().is_none() {
        let hash = berth_identity::password::hash(PW).unwrap();
        meta.put_user(&UserRecord { name: "admin".into(), password_hash: hash.clone(), admin: true, disabled: false, ..UserRecord::default() }).await.unwrap();
        meta.put_user(&UserRecord { name: "plain".into(), password_hash: hash, admin: false, disabled: false, ..UserRecord::default() }).await.unwrap();
    }
    let key = meta.init_setting("registry_signing_key", &berth_identity::token::generate_signing_key().unwrap()).await.unwrap();
    let tokens = Arc::new(TokenIssuer::new(&key, "berth", "berth", Duration::from_secs(900)).unwrap());
    let blobs = Arc::new(FsBlobStore::open(dir.to_path_buf()).unwrap());
    let cfg = ServerConfig { anonymous, ..ServerConfig::default() };
    (berth_server::app(AppState::new(meta.clone(), blobs, tokens, cfg)), meta)
}
