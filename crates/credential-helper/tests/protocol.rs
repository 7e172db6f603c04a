//! The helper through its real protocol, as docker runs it: the command as the argument, the
//! request on stdin, the answer on stdout. `HOME` and the XDG folders point into a temporary
//! folder; Berth is a tiny HTTP server on 127.0.0.1 that counts and records what reaches it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A home of its own: `HOME`, `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home { dir: tempfile::tempdir().unwrap() }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    fn credentials(&self) -> PathBuf {
        self.config().join("berth/credentials.json")
    }
    fn cache(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("cache/berth/helper/127.0.0.1_{port}.json"))
    }
    fn write_logins(&self, v: &Value) {
        std::fs::create_dir_all(self.config().join("berth")).unwrap();
        std::fs::write(self.credentials(), v.to_string()).unwrap();
    }
    fn logins(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.credentials()).unwrap()).unwrap()
    }
    fn helper(&self, args: &[&str], stdin: &str) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_docker-credential-berth"));
        // No proxy or other setting of the machine running the tests reaches the helper.
        cmd.env_clear()
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.config())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes()); // `version` does not read it
        let out = child.wait_with_output().unwrap();
        Out { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
    }
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

struct State {
    requests: Vec<Request>,
    /// The status and body of the next answers.
    reply: (u16, String),
}

/// A stand-in for Berth's `POST /auth/credential`.
struct Berth {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Berth {
    fn start() -> Berth {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { requests: Vec::new(), reply: (500, "not set".into()) }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
                let (mut authorization, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "authorization" => authorization = Some(v.trim().to_owned()),
                            "content-length" => length = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let (status, body) = {
                    let mut st = s.lock().unwrap();
                    st.requests.push(Request { method, path, authorization });
                    st.reply.clone()
                };
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        Berth { port, state }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn reply(&self, status: u16, body: &str) {
        self.state.lock().unwrap().reply = (status, body.into());
    }
    fn grant(&self, secret: &str, expires_in: i64) {
        self.reply(200, &json!({"username": "alice", "secret": secret, "expiresAt": now() + expires_in}).to_string());
    }
    fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
    fn last(&self) -> Request {
        self.state.lock().unwrap().requests.last().cloned().unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A home with a `berth login` (a `berth_cli_` token) for `berth`.
fn logged_in(berth: &Berth) -> Home {
    let home = Home::new();
    home.write_logins(&json!({"current": berth.url(), "logins": {berth.url(): {"username": "alice", "token": "berth_cli_LOGIN"}}}));
    home
}

fn docker_answer(server: &str, username: &str, secret: &str) -> String {
    format!("{{\"ServerURL\":{},\"Username\":{},\"Secret\":{}}}\n", json!(server), json!(username), json!(secret))
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn get_trades_the_login_for_a_short_lived_password_and_caches_it() {
    let berth = Berth::start();
    let home = logged_in(&berth);
    berth.grant("berth_hlp_ONE", 3600);
    let out = home.helper(&["get"], &format!("{}\n", berth.host()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, docker_answer(&berth.host(), "alice", "berth_hlp_ONE"), "docker's exact JSON");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let r = berth.last();
    assert_eq!((r.method.as_str(), r.path.as_str(), r.authorization.as_deref()), ("POST", "/auth/credential", Some("Bearer berth_cli_LOGIN")));
    assert_eq!(berth.count(), 1);
    let cache = home.cache(berth.port);
    #[cfg(unix)]
    assert_eq!(mode(&cache), 0o600);
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!((cached["username"].as_str(), cached["secret"].as_str()), (Some("alice"), Some("berth_hlp_ONE")));
    assert!(!cached.to_string().contains("berth_cli_LOGIN"));

    // From the cache: no request, whatever Berth would say now; the ServerURL as given.
    berth.grant("berth_hlp_TWO", 3600);
    for spelling in [berth.host(), format!("{}/", berth.url()), format!("https://{}", berth.host())] {
        let out = home.helper(&["get"], &spelling);
        assert_eq!(out.stdout, docker_answer(&spelling, "alice", "berth_hlp_ONE"), "{spelling}: {}", out.stderr);
    }
    assert_eq!(berth.count(), 1, "answered from the cache");

    // A new `berth login` does not use the cached password of the old one.
    home.write_logins(&json!({"logins": {berth.url(): {"username": "alice", "token": "berth_cli_NEW"}}}));
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.stdout, docker_answer(&berth.host(), "alice", "berth_hlp_TWO"));
    assert_eq!((berth.count(), berth.last().authorization), (2, Some("Bearer berth_cli_NEW".into())));
}

#[test]
fn an_almost_expired_password_is_refreshed() {
    let berth = Berth::start();
    let home = logged_in(&berth);
    berth.grant("berth_hlp_SHORT", 240); // less than the 5 minutes a cached password must have left
    assert_eq!(home.helper(&["get"], &berth.host()).stdout, docker_answer(&berth.host(), "alice", "berth_hlp_SHORT"));
    berth.grant("berth_hlp_FRESH", 3600);
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.stdout, docker_answer(&berth.host(), "alice", "berth_hlp_FRESH"));
    assert_eq!(berth.count(), 2, "refreshed");
    assert_eq!(home.helper(&["get"], &berth.host()).stdout, docker_answer(&berth.host(), "alice", "berth_hlp_FRESH"));
    assert_eq!(berth.count(), 2, "then cached");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn when_berth_fails_a_cached_password_still_serves_else_one_line_names_the_server() {
    let berth = Berth::start();
    let home = logged_in(&berth);
    berth.grant("berth_hlp_SHORT", 240);
    home.helper(&["get"], &berth.host());
    berth.reply(500, r#"{"errors":[{"message":"database unavailable"}]}"#);
    let out = home.helper(&["get"], &berth.host());
    assert_eq!((out.code, out.stdout.as_str()), (0, docker_answer(&berth.host(), "alice", "berth_hlp_SHORT").as_str()), "{}", out.stderr);
    assert!(out.stderr.contains("warning") && out.stderr.contains("HTTP 500"), "{}", out.stderr);
    assert_eq!(berth.count(), 2);

    // Without a cached password: an error naming the server and what went wrong.
    std::fs::remove_file(home.cache(berth.port)).unwrap();
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(&berth.url()) && out.stderr.contains("HTTP 500") && out.stderr.contains("database unavailable"), "{}", out.stderr);
    assert!(!out.stdout.contains("Secret"), "{}", out.stdout);

    // A 200 that is not a credential: named, without echoing it.
    berth.reply(200, r#"{"username": "alice", "secret": "berth_hlp_LEAK", "expiresAt": "soon"}"#);
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not the expected JSON") && !out.stderr.contains("LEAK") && !out.stdout.contains("LEAK"), "{}", out.stderr);

    // Nothing listening.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    home.write_logins(&json!({"logins": {url.clone(): {"username": "alice", "token": "berth_cli_LOGIN"}}}));
    let out = home.helper(&["get"], url.trim_start_matches("http://"));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("cannot get a registry password from {url}")), "{}", out.stderr);
    assert!(!out.stderr.contains("berth_cli_LOGIN"));

    // A caFile that is not there.
    home.write_logins(&json!({"logins": {berth.url(): {"username": "alice", "token": "berth_cli_LOGIN", "caFile": "/nonexistent/ca.pem"}}}));
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/ca.pem") && out.stderr.contains(&berth.url()), "{}", out.stderr);
}

#[test]
fn an_ended_login_says_so_and_drops_the_cache() {
    for status in [401, 403] {
        let berth = Berth::start();
        let home = logged_in(&berth);
        berth.grant("berth_hlp_SHORT", 240);
        home.helper(&["get"], &berth.host());
        assert!(home.cache(berth.port).exists());
        berth.reply(status, r#"{"errors":[{"code":"UNAUTHORIZED","message":"token revoked"}]}"#);
        let out = home.helper(&["get"], &berth.host());
        assert_eq!(out.code, 1, "{status}");
        let want = format!("your Berth login for {0} has ended (revoked or expired); run: berth login {0}", berth.url());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(&want), "{status}: {}", out.stderr);
        // docker and podman show the helper's stdout in their error: the same line, no password.
        assert_eq!(out.stdout.trim(), want);
        assert!(!home.cache(berth.port).exists(), "{status}: the cache is gone");
        assert_eq!(berth.count(), 2);
    }
}

#[test]
fn an_unknown_server_is_docker_not_found() {
    let berth = Berth::start();
    for home in [Home::new(), logged_in(&berth)] {
        for server in ["registry.example.com", "127.0.0.1", "https://127.0.0.1:1/"] {
            let out = home.helper(&["get"], server);
            assert_eq!((out.code, out.stdout.as_str()), (1, "credentials not found in native keychain\n"), "{server}: {}", out.stderr);
        }
    }
    assert_eq!(berth.count(), 0);
    let out = Home::new().helper(&["get"], "  \n");
    assert_eq!((out.code, out.stdout.trim()), (1, "no credentials server URL"));
}

#[test]
fn store_list_erase_round_trip() {
    let berth = Berth::start();
    let home = Home::new();
    let logins = |ca: Option<&str>| {
        let mut alice = json!({"username": "alice", "token": "berth_cli_LOGIN"});
        if let Some(ca) = ca {
            alice["caFile"] = json!(ca);
        }
        json!({"current": "https://registry.example.com", "logins": {"https://registry.example.com": {"username": "admin", "password": "pw"}, berth.url(): alice}})
    };
    home.write_logins(&logins(None));
    berth.grant("berth_hlp_ONE", 3600);
    home.helper(&["get"], &berth.host());
    assert!(home.cache(berth.port).exists());
    home.write_logins(&logins(Some("/etc/berth/ca.pem")));

    // What `docker login` stores after it logged in with the helper's own answer changes nothing.
    let out = home.helper(&["store"], &json!({"ServerURL": berth.host(), "Username": "alice", "Secret": "berth_hlp_ONE"}).to_string());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(home.logins()["logins"][berth.url()]["token"], "berth_cli_LOGIN");

    // A personal access token replaces the login, keeps its caFile, drops the cached password.
    let out = home.helper(&["store"], &json!({"ServerURL": berth.host(), "Username": "bob", "Secret": "berth_pat_TOKEN"}).to_string());
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, "", ""));
    assert_eq!(home.logins()["logins"][berth.url()], json!({"username": "bob", "token": "berth_pat_TOKEN", "caFile": "/etc/berth/ca.pem"}));
    assert!(!home.cache(berth.port).exists());
    let count = berth.count();
    let out = home.helper(&["get"], &berth.host());
    assert_eq!(out.stdout, docker_answer(&berth.host(), "bob", "berth_pat_TOKEN"));
    assert_eq!(berth.count(), count, "a personal access token is answered without any request");

    // Any other secret is a password; a new server gets https://.
    let out = home.helper(&["store"], &json!({"ServerURL": "other.example.com:5000", "Username": "carol", "Secret": "hunter2"}).to_string());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let logins = home.logins();
    assert_eq!(logins["logins"]["https://other.example.com:5000"], json!({"username": "carol", "password": "hunter2"}));
    assert_eq!(logins["current"], "https://registry.example.com", "docker login does not change the berth CLI's current login");
    #[cfg(unix)]
    assert_eq!(mode(&home.credentials()), 0o600);

    let out = home.helper(&["list"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed, json!({"https://registry.example.com": "admin", berth.url(): "bob", "https://other.example.com:5000": "carol"}));
    assert!(!out.stdout.contains("hunter2") && !out.stdout.contains("berth_pat"), "list shows no secret");

    let out = home.helper(&["erase"], &format!("{}/\n", berth.url()));
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let listed: Value = serde_json::from_str(&home.helper(&["list"], "").stdout).unwrap();
    assert_eq!(listed, json!({"https://registry.example.com": "admin", "https://other.example.com:5000": "carol"}));
    assert_eq!(home.helper(&["get"], &berth.host()).stdout, "credentials not found in native keychain\n");
    assert_eq!(home.helper(&["erase"], &berth.host()).code, 0, "erasing what is not there is fine");
    assert_eq!(home.helper(&["get"], "registry.example.com").stdout, docker_answer("registry.example.com", "admin", "pw"));

    // Bad requests: docker's messages.
    for (input, want) in [
        (json!({"ServerURL": "", "Username": "u", "Secret": "s"}).to_string(), "no credentials server URL"),
        (json!({"ServerURL": "r.example", "Username": "", "Secret": "s"}).to_string(), "no credentials username"),
        ("not json".to_owned(), "stdin is not the JSON"),
    ] {
        let out = home.helper(&["store"], &input);
        assert_eq!(out.code, 1, "{input}");
        assert!(out.stdout.contains(want) && out.stderr.contains(want), "{input}: {} / {}", out.stdout, out.stderr);
    }
}

#[test]
fn a_legacy_login_file_works_and_is_rewritten_in_the_new_format() {
    let home = Home::new();
    std::fs::create_dir_all(home.config().join("berth")).unwrap();
    std::fs::write(home.credentials(), r#"{"server": "https://registry.example.com", "username": "admin", "password": "pw"}"#).unwrap();
    assert_eq!(home.helper(&["get"], "registry.example.com").stdout, docker_answer("registry.example.com", "admin", "pw"));
    assert_eq!(home.helper(&["list"], "").stdout.trim(), r#"{"https://registry.example.com":"admin"}"#);
    home.helper(&["store"], &json!({"ServerURL": "other.example.com", "Username": "u", "Secret": "s"}).to_string());
    let logins = home.logins();
    assert_eq!(logins["current"], "https://registry.example.com");
    assert_eq!(logins["logins"]["https://registry.example.com"], json!({"username": "admin", "password": "pw"}));
}

#[test]
fn version_help_and_bad_commands() {
    let home = Home::new();
    for arg in ["version", "--version"] {
        let out = home.helper(&[arg], "");
        assert_eq!((out.code, out.stdout.as_str()), (0, concat!("docker-credential-berth ", env!("CARGO_PKG_VERSION"), "\n")));
    }
    let out = home.helper(&["--help"], "");
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains(r#"{"credHelpers": {"registry.example.com": "berth"}}"#) && out.stdout.contains("berth login"), "{}", out.stdout);
    for args in [vec![], vec!["frobnicate"], vec!["get", "extra"]] {
        let out = home.helper(&args, "");
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains("usage: docker-credential-berth"), "{args:?}: {}", out.stderr);
    }
}
