//! The credential helper's cache of short-lived registry passwords, one file per registry:
//! `$XDG_CACHE_HOME/berth/helper/<host_port>.json`, else `$HOME/.cache/berth/helper/...`,
//! mode 0600: `{"username": ..., "secret": ..., "expiresAt": <unix seconds>, "login": ...}`.
//!
//! `login` is a fingerprint (a SHA-256 prefix) of the `berth login` token the password was
//! derived from: after a new `berth login` the cached password of the old one is not used.
//! A cache that cannot be read is simply not used; the helper then asks Berth again.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::logins::registry_host;

/// A short-lived registry password that Berth gave for a `berth login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub username: String,
    pub secret: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Never shows the secret.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("username", &self.username).field("secret", &"<hidden>").field("expires_at", &self.expires_at).finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(flatten)]
    credential: Credential,
    #[serde(default)]
    login: String,
}

/// The cache file of one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    path: PathBuf,
}

/// A short fingerprint of a token: enough to tell two tokens apart, useless to find one.
fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..12])
}

impl Cache {
    /// `$XDG_CACHE_HOME/berth/helper`, else `$HOME/.cache/berth/helper`.
    pub fn default_dir() -> anyhow::Result<PathBuf> {
        Ok(crate::berth_dir("XDG_CACHE_HOME", ".cache").context("cannot find a folder for the credential cache")?.join("helper"))
    }

    /// The cache of `server` (any spelling of [`registry_host`]) in [`Cache::default_dir`].
    pub fn for_server(server: &str) -> anyhow::Result<Cache> {
        Ok(Cache::in_dir(&Cache::default_dir()?, server))
    }

    /// The cache of `server` in `dir`: `<dir>/<host_port>.json`, every character of the
    /// registry host other than a letter, a digit, `.` and `-` made `_` (`127.0.0.1_5000.json`).
    pub fn in_dir(dir: &Path, server: &str) -> Cache {
        let name: String = registry_host(server).chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        // `registry_host` of something odd may be empty or all dots: never a path outside `dir`.
        let name = if name.chars().all(|c| c == '.') { format!("_{name}") } else { name };
        Cache { path: dir.join(format!("{name}.json")) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached credential, if there is one and it was derived from `token`.
    pub fn read(&self, token: &str) -> Option<Credential> {
        let entry: Entry = serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()?;
        (entry.login == fingerprint(token)).then_some(entry.credential)
    }

    /// Caches `credential`, derived from `token` (atomically, mode 0600).
    pub fn write(&self, token: &str, credential: &Credential) -> anyhow::Result<()> {
        let entry = Entry { credential: credential.clone(), login: fingerprint(token) };
        crate::write_private(&self.path, &serde_json::to_vec(&entry).context("encoding the cache")?)
    }

    /// Forgets the cached credential (none is no error).
    pub fn remove(&self) -> anyhow::Result<()> {
        crate::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_registry_whatever_its_spelling() {
        let dir = Path::new("/c");
        let name = |s: &str| Cache::in_dir(dir, s).path().to_string_lossy().into_owned();
        assert_eq!(name("127.0.0.1:5000"), "/c/127.0.0.1_5000.json");
        assert_eq!(name("http://127.0.0.1:5000/"), "/c/127.0.0.1_5000.json");
        assert_eq!(name("https://Registry.example.com:443"), "/c/registry.example.com.json");
        assert_eq!(name("[::1]:5000"), "/c/___1__5000.json");
        assert_eq!(name("https://../x"), "/c/_...json");
        assert_eq!(name(""), "/c/_.json");
    }

    #[test]
    fn a_credential_is_read_back_only_for_its_login() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Cache::in_dir(tmp.path(), "registry.example.com");
        assert!(c.read("berth_cli_a").is_none());
        let cred = Credential { username: "alice".into(), secret: "berth_hlp_x".into(), expires_at: 1_900_000_000 };
        c.write("berth_cli_a", &cred).unwrap();
        assert_eq!(c.read("berth_cli_a"), Some(cred.clone()));
        assert!(c.read("berth_cli_b").is_none(), "a new `berth login` does not use the old one's password");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(c.path()).unwrap()).unwrap();
        assert_eq!((json["username"].as_str(), json["secret"].as_str(), json["expiresAt"].as_i64()), (Some("alice"), Some("berth_hlp_x"), Some(1_900_000_000)));
        assert!(!json.to_string().contains("berth_cli_a"), "the login token is not in the cache");
        assert!(!format!("{cred:?}").contains("berth_hlp_x"));
        std::fs::write(c.path(), b"{not json").unwrap();
        assert!(c.read("berth_cli_a").is_none());
        c.remove().unwrap();
        c.remove().unwrap();
        assert!(!c.path().exists());
    }
}
