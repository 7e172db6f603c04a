//! The saved logins of `berth login`: one login per Berth server, and which one is current.
//!
//! The file is `$XDG_CONFIG_HOME/berth/credentials.json`, else
//! `$HOME/.config/berth/credentials.json`:
//!
//! ```json
//! {"current": "https://registry.example.com",
//!  "logins": {"https://registry.example.com": {"username": "alice", "token": "berth_cli_...", "caFile": "/path/ca.pem"}}}
//! ```
//!
//! A login's key is its server URL without a trailing slash; `token`, `password` and `caFile`
//! are optional. The file of earlier versions, `{"server": ..., "username": ..., "password": ...}`
//! (one login), is read as that one current login; [`Logins::save`] always writes the format
//! above. Saving is atomic, the file's mode is 0600 and a folder it creates is 0700.
//!
//! Registry clients name a server in many ways (`registry.example.com`, `registry.example.com:443`,
//! `https://registry.example.com/`); [`Logins::find`] compares what [`registry_host`] makes of
//! them: the host and port without scheme, path or default port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The prefix of the token of a `berth login`, which the credential helper trades for
/// short-lived registry passwords (other tokens, like personal access tokens, are passwords).
pub const CLI_TOKEN_PREFIX: &str = "berth_cli_";

/// One saved login.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The server's URL without a trailing slash, like `https://registry.example.com` (the key).
    pub server: String,
    pub username: String,
    /// A Berth token: the credential of `berth login` (`berth_cli_...`) or a personal access token.
    pub token: Option<String>,
    pub password: Option<String>,
    /// A PEM file of CA certificates to trust for this server, besides the usual roots.
    pub ca_file: Option<PathBuf>,
}

impl Login {
    /// The secret registry clients send: the token, else the password.
    pub fn secret(&self) -> Option<&str> {
        self.token.as_deref().or(self.password.as_deref())
    }

    /// The token of a `berth login`, which the credential helper trades for short-lived
    /// registry passwords.
    pub fn cli_token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| t.starts_with(CLI_TOKEN_PREFIX))
    }
}

/// Never shows the token or the password.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("token", &hidden(&self.token))
            .field("password", &hidden(&self.password))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The saved logins, as loaded from (and saved to) one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logins {
    path: PathBuf,
    current: Option<String>,
    logins: BTreeMap<String, Login>,
}

/// A login as the file holds it (its server is the key).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct File {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    logins: BTreeMap<String, Stored>,
}

/// The one login of earlier versions.
#[derive(Deserialize)]
struct Legacy {
    server: String,
    username: String,
    password: String,
}

impl Logins {
    /// `$XDG_CONFIG_HOME/berth/credentials.json`, else `$HOME/.config/berth/credentials.json`.
    pub fn default_path() -> anyhow::Result<PathBuf> {
        Ok(crate::berth_dir("XDG_CONFIG_HOME", ".config").context("cannot find where `berth login` keeps its credentials")?.join("credentials.json"))
    }

    /// The logins of [`Logins::default_path`]; no file is no logins.
    pub fn load() -> anyhow::Result<Logins> {
        Logins::load_from(Logins::default_path()?)
    }

    /// The logins of the file `path` (saved back there); no file is no logins.
    pub fn load_from(path: impl Into<PathBuf>) -> anyhow::Result<Logins> {
        let path = path.into();
        let mut logins = Logins { path, current: None, logins: BTreeMap::new() };
        let bytes = match std::fs::read(&logins.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(logins),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", logins.path.display()))),
        };
        // Parse errors name the place, never the text (which holds secrets).
        let bad = |e: serde_json::Error| anyhow::anyhow!("{} is not a valid credentials file (line {}, column {}); run `berth login` again", logins.path.display(), e.line(), e.column());
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
        if value.get("logins").is_none() && value.get("server").is_some() {
            let l: Legacy = serde_json::from_value(value).map_err(bad)?;
            logins.insert(&l.server, Login { server: String::new(), username: l.username, token: None, password: Some(l.password), ca_file: None });
            return Ok(logins);
        }
        let file: File = serde_json::from_value(value).map_err(bad)?;
        for (server, s) in file.logins {
            let server = server_url(&server);
            let login = Login { server: server.clone(), username: s.username, token: s.token, password: s.password, ca_file: s.ca_file };
            logins.logins.insert(server, login);
        }
        logins.current = file.current.map(|c| server_url(&c)).filter(|c| logins.logins.contains_key(c));
        Ok(logins)
    }

    /// The file these logins are saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the logins to [`Logins::path`]: atomically, mode 0600, always the current format.
    pub fn save(&self) -> anyhow::Result<()> {
        let file = File {
            current: self.current.clone(),
            logins: self
                .logins
                .iter()
                .map(|(k, l)| (k.clone(), Stored { username: l.username.clone(), token: l.token.clone(), password: l.password.clone(), ca_file: l.ca_file.clone() }))
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).context("encoding the credentials")?;
        bytes.push(b'\n');
        crate::write_private(&self.path, &bytes)
    }

    /// The current login (the last one `berth login` made, unless changed since).
    pub fn current(&self) -> Option<&Login> {
        self.current.as_ref().and_then(|c| self.logins.get(c))
    }

    /// Makes the login of `server` (any spelling [`Logins::find`] accepts) the current one;
    /// false when there is none.
    pub fn set_current(&mut self, server: &str) -> bool {
        match self.find(server).map(|l| l.server.clone()) {
            Some(key) => {
                self.current = Some(key);
                true
            }
            None => false,
        }
    }

    /// The login for `server` as a registry client names it: `registry.example.com`,
    /// `registry.example.com:5000`, `https://registry.example.com/`, `http://127.0.0.1:5000`.
    /// Compares [`registry_host`]s, so the scheme, a path and a default port (443, 80) do not
    /// matter.
    pub fn find(&self, server: &str) -> Option<&Login> {
        let host = registry_host(server);
        if host.is_empty() {
            return None;
        }
        let matches = |l: &&Login| registry_host(&l.server) == host;
        self.current().filter(matches).or_else(|| self.logins.values().find(matches))
    }

    /// Saves `login` under `server_url` (a URL; without a scheme, `https://` is assumed; a
    /// trailing slash is dropped) and makes it current. It replaces any login for the same
    /// [`registry_host`]. `login.server` is set to the key.
    pub fn insert(&mut self, server_url: &str, mut login: Login) {
        let key = crate::logins::server_url(server_url);
        let host = registry_host(&key);
        self.logins.retain(|_, l| registry_host(&l.server) != host);
        login.server = key.clone();
        self.logins.insert(key.clone(), login);
        self.current = Some(key);
    }

    /// Removes the login for `server` (as [`Logins::find`] matches it) and returns it; the
    /// current login is then none if it was that one.
    pub fn remove(&mut self, server: &str) -> Option<Login> {
        let key = self.find(server)?.server.clone();
        if self.current.as_deref() == Some(key.as_str()) {
            self.current = None;
        }
        self.logins.remove(&key)
    }

    /// Every login, by server URL.
    pub fn iter(&self) -> impl Iterator<Item = &Login> {
        self.logins.values()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }
}

/// A server as a login's key: trimmed, without trailing slashes, `https://` when it has no
/// scheme.
pub fn server_url(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("https://{s}")
    }
}

/// What identifies a registry, however a client spells it: `host[:port]` in lower case,
/// without scheme, user information, path, or a default port (443, 80).
/// `https://Registry.example.com:443/v2/` and `registry.example.com` are both
/// `registry.example.com`; `http://127.0.0.1:5000` is `127.0.0.1:5000`; IPv6 addresses keep
/// their brackets (`[::1]:5000`).
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next().unwrap_or_default();
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    let s = s.to_ascii_lowercase();
    let (host, port) = if s.starts_with('[') {
        match s.split_once(']') {
            Some((h, rest)) => (format!("{h}]"), rest.strip_prefix(':')),
            None => (s.clone(), None),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.clone(), None),
        }
    };
    match port {
        None | Some("") => host,
        Some(p) => match p.parse::<u16>() {
            Ok(443 | 80) => host,
            Ok(n) => format!("{host}:{n}"),
            Err(_) => s,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(username: &str, token: Option<&str>) -> Login {
        Login { server: String::new(), username: username.into(), token: token.map(Into::into), password: None, ca_file: None }
    }

    fn empty(dir: &Path) -> Logins {
        Logins::load_from(dir.join("credentials.json")).unwrap()
    }

    #[test]
    fn registry_host_table() {
        let cases = [
            ("registry.example.com", "registry.example.com"),
            ("Registry.Example.COM", "registry.example.com"),
            ("https://registry.example.com", "registry.example.com"),
            ("https://registry.example.com/", "registry.example.com"),
            ("https://registry.example.com/v2/", "registry.example.com"),
            ("registry.example.com:443", "registry.example.com"),
            ("http://registry.example.com:80", "registry.example.com"),
            ("registry.example.com:5000", "registry.example.com:5000"),
            ("https://registry.example.com:5000/", "registry.example.com:5000"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("127.0.0.1:05000", "127.0.0.1:5000"),
            ("https://alice@registry.example.com", "registry.example.com"),
            ("[::1]:5000", "[::1]:5000"),
            ("http://[::1]", "[::1]"),
            ("  registry.example.com\n", "registry.example.com"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(registry_host(input), want, "{input:?}");
        }
    }

    #[test]
    fn find_matches_what_clients_send() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = empty(tmp.path());
        l.insert("https://registry.example.com/", login("alice", Some("berth_cli_a")));
        l.insert("http://127.0.0.1:5000", login("bob", Some("berth_cli_b")));
        l.insert("registry.example.com:5000", login("carol", None));
        l.insert("https://[::1]:7000", login("dave", None));
        let cases: &[(&str, Option<&str>)] = &[
            ("registry.example.com", Some("alice")),
            ("REGISTRY.example.com", Some("alice")),
            ("https://registry.example.com", Some("alice")),
            ("https://registry.example.com/", Some("alice")),
            ("http://registry.example.com", Some("alice")),
            ("registry.example.com:443", Some("alice")),
            ("https://registry.example.com/v2/", Some("alice")),
            ("registry.example.com:5000", Some("carol")),
            ("https://registry.example.com:5000", Some("carol")),
            ("127.0.0.1:5000", Some("bob")),
            ("http://127.0.0.1:5000", Some("bob")),
            ("https://127.0.0.1:5000/", Some("bob")),
            ("[::1]:7000", Some("dave")),
            ("127.0.0.1", None),
            ("127.0.0.1:5001", None),
            ("registry.example.com:5001", None),
            ("example.com", None),
            ("registry.example.com.evil.example", None),
            ("evil.example/registry.example.com", None),
            ("", None),
        ];
        for (server, want) in cases {
            assert_eq!(l.find(server).map(|l| l.username.as_str()), *want, "{server:?}");
        }
        assert_eq!(l.find("registry.example.com").unwrap().server, "https://registry.example.com", "the key has no trailing slash");
        assert_eq!(l.find("registry.example.com:5000").unwrap().server, "https://registry.example.com:5000", "https:// when no scheme");
    }

    #[test]
    fn insert_replaces_the_same_registry_and_sets_current() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = empty(tmp.path());
        assert!(l.current().is_none() && l.is_empty());
        l.insert("https://registry.example.com", login("alice", Some("berth_cli_a")));
        l.insert("https://other.example.com", login("bob", None));
        assert_eq!(l.current().unwrap().username, "bob");
        l.insert("registry.example.com:443/", login("alice2", None));
        assert_eq!(l.iter().count(), 2, "one login per registry");
        assert_eq!(l.current().unwrap().username, "alice2");
        assert!(l.set_current("other.example.com"));
        assert!(!l.set_current("nowhere.example.com"));
        assert_eq!(l.current().unwrap().username, "bob");
        assert_eq!(l.remove("https://other.example.com/").unwrap().username, "bob");
        assert!(l.current().is_none(), "the current login was removed");
        assert!(l.remove("other.example.com").is_none());
        // The key is the URL as given (without its trailing slash).
        assert_eq!(l.iter().map(|l| l.server.as_str()).collect::<Vec<_>>(), ["https://registry.example.com:443"]);
    }

    #[test]
    fn save_and_load_round_trip_in_the_documented_format() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = empty(tmp.path());
        l.insert(
            "https://registry.example.com",
            Login { server: String::new(), username: "alice".into(), token: Some("berth_cli_x".into()), password: None, ca_file: Some("/etc/ca.pem".into()) },
        );
        l.insert("http://127.0.0.1:5000", login("bob", None));
        l.set_current("registry.example.com");
        l.save().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(l.path()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "current": "https://registry.example.com",
                "logins": {
                    "https://registry.example.com": {"username": "alice", "token": "berth_cli_x", "caFile": "/etc/ca.pem"},
                    "http://127.0.0.1:5000": {"username": "bob"}
                }
            })
        );
        let back = Logins::load_from(l.path()).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.current().unwrap().cli_token(), Some("berth_cli_x"));
    }

    #[test]
    fn the_legacy_file_is_one_current_login_and_is_saved_in_the_new_format() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("credentials.json");
        std::fs::write(&path, br#"{"server": "https://registry.example.com/", "username": "admin", "password": "s3cret"}"#).unwrap();
        let mut l = Logins::load_from(&path).unwrap();
        let cur = l.current().unwrap();
        assert_eq!((cur.server.as_str(), cur.username.as_str(), cur.password.as_deref(), cur.token.as_deref()), ("https://registry.example.com", "admin", Some("s3cret"), None));
        assert_eq!(cur.secret(), Some("s3cret"));
        assert!(cur.cli_token().is_none());
        assert_eq!(l.find("registry.example.com").unwrap().username, "admin");
        l.insert("https://other.example.com", login("bob", Some("berth_pat_1")));
        l.save().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["logins"]["https://registry.example.com"], serde_json::json!({"username": "admin", "password": "s3cret"}));
        assert_eq!(json["current"], "https://other.example.com");
        assert!(json.get("server").is_none());
    }

    #[test]
    fn a_missing_file_is_no_logins_and_a_broken_one_an_error_without_its_text() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(empty(tmp.path()).is_empty());
        let path = tmp.path().join("credentials.json");
        std::fs::write(&path, br#"{"logins": {"https://r.example": {"token": "berth_cli_SECRET"}}}"#).unwrap();
        let e = format!("{:#}", Logins::load_from(&path).unwrap_err());
        assert!(e.contains("not a valid credentials file") && !e.contains("SECRET"), "{e}");
        std::fs::write(&path, b"{\"server\": \"x\", \"password\": \"SECRET\"").unwrap();
        let e = format!("{:#}", Logins::load_from(&path).unwrap_err());
        assert!(e.contains("not a valid credentials file") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let l = Login { server: "https://r.example".into(), username: "alice".into(), token: Some("berth_cli_SECRET".into()), password: Some("PW".into()), ca_file: None };
        let d = format!("{l:?}");
        assert!(!d.contains("SECRET") && !d.contains("PW") && d.contains("alice"), "{d}");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_0600_in_a_0700_folder() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Logins::load_from(tmp.path().join("config/berth/credentials.json")).unwrap();
        l.insert("https://registry.example.com", login("alice", Some("berth_cli_x")));
        l.save().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(l.path()), 0o600);
        assert_eq!(mode(&tmp.path().join("config/berth")), 0o700);
        // Saving over a file with looser permissions (as older versions may have left) tightens them.
        std::fs::set_permissions(l.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        l.save().unwrap();
        assert_eq!(mode(l.path()), 0o600);
    }
}
