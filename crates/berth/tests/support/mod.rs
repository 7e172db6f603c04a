//! The end-to-end harness: runs the real `berth` binary and real clients (skopeo, oras-py)
//! against it, on 127.0.0.1 only.
//!
//! - [`Berth::builder`] starts `berth serve` on port 0 with a temporary data folder, a fixed
//!   admin password (or a generated one), optional anonymous mode, TLS (a test CA and server
//!   certificate made with the `openssl` CLI) and extra environment; it reads the bound address
//!   from the "Berth is listening" log line ([`wait_listening`]) and waits for `/healthz`.
//!   Stdout and stderr of every run go to files in the temporary folder and are printed when a
//!   test fails. Dropping the handle kills the process. [`Berth::restart`] keeps the data folder
//!   (the address may change: ask [`Berth::host`] again), [`Berth::kill9`] and
//!   [`Berth::terminate`] stop it hard or gracefully.
//! - [`Berth::skopeo`] runs skopeo with its auth files, policy and temp files kept in the test's
//!   folder, so tests never touch (or depend on) the user's configuration.
//! - [`OciImage`] writes and reads small OCI image layouts (`oci:` transport) in pure Rust: a
//!   random file in an uncompressed tar, wrapped in gzip with stored deflate blocks, a config and
//!   a manifest, all with correct digests and diff_ids.
//! - [`python`] finds the Python interpreter that has `oras` (BERTH_TEST_PYTHON, else the
//!   repository's `.venv`, which `scripts/test.sh` creates).

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sha2::Digest as _;
pub mod browser;
pub mod oidc;

/// The admin password every server gets unless the test asks for a generated one.
pub const ADMIN_PASSWORD: &str = "e2e-admin-password";

/// How long a start may take before the test fails (a cold, loaded CI machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `sha256:<hex>` of `b`.
pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// A `berth` command with a clean environment: no inherited `BERTH_*` variables (Berth rejects
/// unknown ones, and the caller's settings must not leak into a test) and no RUST_LOG.
pub fn berth_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// The captured result of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn from_output(what: String, out: std::process::Output) -> CmdOutput {
        CmdOutput {
            what,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Panics with the full output unless the command succeeded.
    pub fn assert_success(self) -> CmdOutput {
        assert!(
            self.status.success(),
            "command failed ({}): {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status,
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
    /// Panics with the full output unless the command failed.
    pub fn assert_failure(self) -> CmdOutput {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
    /// Stdout and stderr together, lowercased, for matching error messages.
    pub fn text_lower(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr).to_lowercase()
    }
}

/// Runs a command to completion (stdin closed), capturing its output.
pub fn run(cmd: &mut Command) -> CmdOutput {
    let what = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    CmdOutput::from_output(what, out)
}

/// Runs `f` on a fresh single-threaded tokio runtime in its own thread, so that synchronous
/// harness code can use reqwest whether or not the caller is inside a runtime.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f))
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ------------------------------------------------------------------------------------------
// TLS material

/// A test CA and a server certificate for 127.0.0.1 / localhost, made with the `openssl` CLI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// A folder holding only the CA as `ca.crt`: what `skopeo --cert-dir` wants.
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    /// Generates the CA and the server certificate in `dir` (created if needed).
    pub fn generate(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(dir)).assert_success();
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=Berth e2e test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let cert_dir = dir.join("certs.d");
        std::fs::create_dir_all(&cert_dir).unwrap();
        std::fs::copy(dir.join("ca.crt"), cert_dir.join("ca.crt")).unwrap();
        TlsFiles { ca_cert: dir.join("ca.crt"), cert_dir, server_cert: dir.join("server.crt"), server_key: dir.join("server.key") }
    }
}

// ------------------------------------------------------------------------------------------
// Clients' environment

/// Where clients keep their files (auth, policy, temp) for one test: a cheap copy of what
/// [`Berth::client_env`] sets, usable from other threads.
#[derive(Debug, Clone)]
pub struct ClientEnv {
    dir: PathBuf,
}

impl ClientEnv {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn apply(&self, cmd: &mut Command) {
        let home = self.path("home");
        let run_dir = self.path("xdg-run");
        for d in [&home, &run_dir, &self.path("tmp")] {
            std::fs::create_dir_all(d).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let registries = self.path("registries.conf");
        if !registries.exists() {
            std::fs::write(&registries, "# empty: the e2e tests use fully qualified references\n").unwrap();
        }
        cmd.env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run_dir)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", &registries)
            .env("DOCKER_CONFIG", home.join(".docker"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .current_dir(&self.dir);
    }

    /// Runs `skopeo --insecure-policy --command-timeout 120s <args>` in this environment.
    pub fn skopeo(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "--command-timeout", "120s"]).args(args);
        self.apply(&mut cmd);
        run(&mut cmd)
    }
}

// ------------------------------------------------------------------------------------------
// Shared backends: PostgreSQL + S3

/// A PostgreSQL database and an S3 prefix of their own (on the servers `scripts/test.sh` starts),
/// for one Berth on them or several replicas sharing them. The database is dropped on drop.
pub struct SharedBackends {
    db: Option<berth_meta::postgres::testdb::TestDb>,
    pub metadata_url: String,
    pub storage_url: String,
}

impl SharedBackends {
    pub fn create(test: &str) -> SharedBackends {
        let db = block_on(berth_meta::postgres::testdb::TestDb::create());
        let prefix = berth_blob::testsuite::s3env::fresh_prefix(test);
        let endpoint = berth_blob::testsuite::s3env::endpoint();
        let enc = |s: &str| s.replace('%', "%25").replace('&', "%26").replace('?', "%3F").replace('=', "%3D");
        let storage_url = format!(
            "s3://{}/{prefix}?region=us-east-1&endpoint={}&path_style=true&allow_http=true",
            berth_blob::testsuite::s3env::bucket(),
            enc(&endpoint)
        );
        SharedBackends { metadata_url: db.url().to_owned(), storage_url, db: Some(db) }
    }

    /// The environment that points `berth` at them (moto takes any static credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BERTH_METADATA_URL".into(), self.metadata_url.clone()),
            ("BERTH_STORAGE_URL".into(), self.storage_url.clone()),
            ("BERTH_METADATA__MAX_CONNECTIONS".into(), "8".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }

    /// The environment with the database and the S3 server reached through other addresses
    /// (fault proxies in front of them).
    pub fn env_via(&self, postgres: SocketAddr, s3: SocketAddr) -> Vec<(String, String)> {
        let pg = self.postgres_addr().to_string();
        self.env_with_s3_endpoint(&format!("http://{s3}"))
            .into_iter()
            .map(|(k, v)| if k == "BERTH_METADATA_URL" { (k, v.replacen(&pg, &postgres.to_string(), 1)) } else { (k, v) })
            .collect()
    }

    /// The environment with the S3 server reached at `endpoint` (`http://...` or `https://...`).
    pub fn env_with_s3_endpoint(&self, endpoint: &str) -> Vec<(String, String)> {
        let now = format!("http://{}", self.s3_addr());
        let env: Vec<(String, String)> =
            self.env().into_iter().map(|(k, v)| if k == "BERTH_STORAGE_URL" { (k, v.replacen(&now, endpoint, 1)) } else { (k, v) }).collect();
        assert!(env.iter().any(|(_, v)| v.contains(endpoint)), "the storage URL does not name {now}: {env:?}");
        env
    }

    /// The PostgreSQL server's address (the URL's host:port).
    pub fn postgres_addr(&self) -> SocketAddr {
        let after = self.metadata_url.split_once('@').map_or(self.metadata_url.as_str(), |(_, r)| r);
        after.split('/').next().unwrap().parse().unwrap()
    }

    /// The S3 server's address.
    pub fn s3_addr(&self) -> SocketAddr {
        let e = berth_blob::testsuite::s3env::endpoint();
        e.trim_start_matches("http://").trim_end_matches('/').parse().unwrap()
    }

    /// A store on the S3 prefix, to look at what the replicas wrote.
    pub fn s3_options(&self) -> berth_blob::S3Options {
        let prefix = self.storage_url.trim_start_matches("s3://").split_once('/').map_or("", |(_, p)| p).split('?').next().unwrap_or("");
        berth_blob::testsuite::s3env::options(prefix)
    }
}

impl Drop for SharedBackends {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            block_on(db.drop());
        }
    }
}

// ------------------------------------------------------------------------------------------
// The server

/// Options for a Berth under test; [`BerthBuilder::start`] runs it.
#[derive(Debug, Clone)]
pub struct BerthBuilder {
    admin_password: Option<String>,
    anonymous: Option<String>,
    tls: bool,
    env: Vec<(String, String)>,
}

impl BerthBuilder {
    /// Start without BERTH_ADMIN_PASSWORD: Berth generates one and prints it on the first start.
    pub fn generated_admin_password(mut self) -> Self {
        self.admin_password = None;
        self
    }
    /// BERTH_ANONYMOUS: "off", "pull" or "read-write".
    pub fn anonymous(mut self, mode: &str) -> Self {
        self.anonymous = Some(mode.to_owned());
        self
    }
    /// Serve HTTPS with a freshly generated test CA and server certificate.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// Run on PostgreSQL and S3 (the data folder then holds nothing that matters).
    pub fn backends(mut self, shared: &SharedBackends) -> Self {
        self.env.extend(shared.env());
        self
    }
    /// Several environment variables.
    pub fn envs(mut self, vars: Vec<(String, String)>) -> Self {
        self.env.extend(vars);
        self
    }
    /// Any other environment variable for the server.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// Starts the server and waits until `/healthz` answers 200.
    pub fn start(self) -> Berth {
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let tls = self.tls.then(|| TlsFiles::generate(&dir.path().join("tls")));
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut berth = Berth { dir, data_dir, addr, child: None, runs: 0, opts: self, tls, http: None };
        berth.spawn_until_healthy();
        berth
    }
}

/// A running (or stopped) `berth serve` and its temporary folder.
pub struct Berth {
    dir: tempfile::TempDir,
    /// The data folder (BERTH_DATA_DIR); survives [`Berth::restart`].
    pub data_dir: PathBuf,
    /// The address the current (last) run logged; a restart may change it.
    addr: SocketAddr,
    child: Option<Child>,
    /// Number of starts so far; run `n` logs to `stdout-n.log` / `stderr-n.log`.
    runs: usize,
    opts: BerthBuilder,
    tls: Option<TlsFiles>,
    http: Option<reqwest::Client>,
}

/// The message of the line `berth serve` logs once its listener is bound; its `url` field
/// (`http://127.0.0.1:<port>`) is how a test learns the port that `127.0.0.1:0` became.
pub const LISTENING: &str = "Berth is listening";

/// The value of `field` in the first complete line of `logs` whose message is `message`, in
/// either of Berth's log formats: JSON (`{"message": "Berth is listening", "url": "http://..."}`,
/// flattened) or text (`... INFO berth: Berth is listening version="0.1.0" url="http://..."`).
pub fn log_field(logs: &str, message: &str, field: &str) -> Option<String> {
    // A line still being written has no newline yet.
    let complete = &logs[..logs.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().find_map(|line| match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => {
            let fields = if v.get("message").is_some() { &v } else { &v["fields"] };
            (fields["message"] == message).then(|| fields[field].as_str().map(str::to_owned)).flatten()
        }
        Err(_) => text_field(line.split_once(message)?.1, field),
    })
}

/// `field=value` or `field="value"` among the space-separated fields of a text log line.
fn text_field(fields: &str, field: &str) -> Option<String> {
    let key = format!("{field}=");
    let at = fields.match_indices(&key).find(|(i, _)| *i == 0 || fields[..*i].ends_with(' '))?.0;
    let value = &fields[at + key.len()..];
    match value.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().map(str::to_owned),
        None => value.split_whitespace().next().map(str::to_owned),
    }
}

/// The address in the `url` field of the [`LISTENING`] line of `logs`, if it is there yet.
pub fn listening_addr(logs: &str) -> Option<SocketAddr> {
    let url = log_field(logs, LISTENING, "url")?;
    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest).trim_end_matches('/');
    Some(authority.parse().unwrap_or_else(|e| panic!("{LISTENING:?} with an unreadable url {url:?}: {e}")))
}

/// Waits until `berth serve` (`child`, logging to the file `log`) has logged [`LISTENING`] and
/// returns the address it is bound to. Only the part of `log` from byte `from` on is read (a log
/// that several runs append to). Err(exit status) if the process ends first; panics with the log
/// when `timeout` passes (Berth must log at `info` for its target `berth`).
pub fn wait_listening(child: &mut Child, log: &Path, from: usize, timeout: Duration) -> Result<SocketAddr, ExitStatus> {
    let deadline = Instant::now() + timeout;
    let read = || std::fs::read(log).map(|b| String::from_utf8_lossy(b.get(from..).unwrap_or_default()).into_owned()).unwrap_or_default();
    loop {
        if let Some(addr) = listening_addr(&read()) {
            return Ok(addr);
        }
        if let Some(status) = child.try_wait().unwrap() {
            // It may have logged the line just before it ended.
            return listening_addr(&read()).ok_or(status);
        }
        if Instant::now() > deadline {
            panic!(
                "berth did not log {LISTENING:?} with its address within {timeout:?} (is its log level below info?)\n--- {}:\n{}",
                log.display(),
                read()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Berth {
    pub fn builder() -> BerthBuilder {
        BerthBuilder { admin_password: Some(ADMIN_PASSWORD.into()), anonymous: None, tls: false, env: Vec::new() }
    }
    /// A server with the defaults: plain HTTP, fixed admin password, anonymous access off.
    pub fn start() -> Berth {
        Berth::builder().start()
    }

    /// The test's temporary folder (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// A path inside the test's temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The port of the current run (a restart may change it).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `127.0.0.1:<port>`: the registry host for clients, as the current run logged it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.host())
    }
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berth is not running").id()
    }
    /// The admin password: the fixed one, or the one the first start printed.
    pub fn admin_password(&self) -> String {
        match &self.opts.admin_password {
            Some(p) => p.clone(),
            None => parse_generated_password(&self.stdout_of(0))
                .unwrap_or_else(|| panic!("the first start printed no generated password:\n{}", self.stdout_of(0))),
        }
    }
    /// `admin:<password>` for skopeo's --creds options.
    pub fn creds(&self) -> String {
        format!("admin:{}", self.admin_password())
    }
    /// `docker://127.0.0.1:<port>/<name>` for skopeo.
    pub fn docker_ref(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.host())
    }

    /// A reqwest client for this server (trusting the test CA when TLS is on). No credentials:
    /// add `.basic_auth("admin", Some(..))` per request, see [`Berth::admin`].
    pub fn http(&mut self) -> reqwest::Client {
        if self.http.is_none() {
            self.http = Some(http_client(self.tls.as_ref().map(|t| t.ca_cert.as_path())));
        }
        self.http.clone().unwrap()
    }
    /// A request with the admin's Basic credentials.
    pub fn admin(&mut self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let pw = self.admin_password();
        let url = self.url(path);
        self.http().request(method, url).basic_auth("admin", Some(pw))
    }

    /// Stdout of run `n` (0 is the first start).
    pub fn stdout_of(&self, n: usize) -> String {
        std::fs::read_to_string(self.path(&format!("stdout-{n}.log"))).unwrap_or_default()
    }
    /// Stderr (the logs) of run `n`.
    pub fn stderr_of(&self, n: usize) -> String {
        std::fs::read_to_string(self.path(&format!("stderr-{n}.log"))).unwrap_or_default()
    }
    /// Stdout of the current (last) run.
    pub fn stdout(&self) -> String {
        self.stdout_of(self.runs.saturating_sub(1))
    }
    /// Stderr of the current (last) run.
    pub fn stderr(&self) -> String {
        self.stderr_of(self.runs.saturating_sub(1))
    }
    /// The value of `field` in the line with `message` that the current run logs (text or JSON
    /// logs, see [`log_field`]), waiting for the line at most as long as a start may take; e.g.
    /// the `url` of "metrics are served without authentication here" with a metrics listener on
    /// port 0.
    pub fn wait_log_field(&self, message: &str, field: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(value) = log_field(&self.stderr(), message, field) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("berth did not log {message:?} with a field {field:?} within {START_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Number of starts so far.
    pub fn runs(&self) -> usize {
        self.runs
    }
    /// Everything every run wrote, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 0..self.runs {
            let _ = write!(s, "--- berth run {n} stdout:\n{}\n--- berth run {n} stderr:\n{}\n", self.stdout_of(n), self.stderr_of(n));
        }
        s
    }

    /// Starts run `n` on `127.0.0.1:0`, reads the address it logged, and waits for `/healthz`.
    fn spawn_until_healthy(&mut self) {
        self.http = None; // pooled connections to a previous process are dead
        let n = self.runs;
        self.runs += 1;
        let stdout = std::fs::File::create(self.path(&format!("stdout-{n}.log"))).unwrap();
        let stderr_log = self.path(&format!("stderr-{n}.log"));
        let stderr = std::fs::File::create(&stderr_log).unwrap();
        let mut cmd = berth_command();
        cmd.arg("serve")
            .current_dir(self.dir.path())
            .env("BERTH_LISTEN", "127.0.0.1:0")
            .env("BERTH_DATA_DIR", &self.data_dir)
            .env("BERTH_LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        if let Some(pw) = &self.opts.admin_password {
            cmd.env("BERTH_ADMIN_PASSWORD", pw);
        }
        if let Some(a) = &self.opts.anonymous {
            cmd.env("BERTH_ANONYMOUS", a);
        }
        if let Some(t) = &self.tls {
            cmd.env("BERTH_TLS__CERT", &t.server_cert).env("BERTH_TLS__KEY", &t.server_key);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = self.child.insert(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_berth"))));
        // The logs (stderr) name the address; run n's stderr is a fresh file.
        let listening = wait_listening(child, &stderr_log, 0, START_TIMEOUT);
        let outcome = listening.and_then(|addr| {
            self.addr = addr;
            self.wait_healthy()
        });
        if let Err(status) = outcome {
            self.child = None;
            panic!("berth exited with {status} before becoming healthy\n{}", self.logs());
        }
    }

    /// Waits for `/healthz` = 200; Err(exit status) if the process ended first.
    fn wait_healthy(&mut self) -> Result<(), ExitStatus> {
        let url = self.url("/healthz");
        let ca = self.tls.as_ref().map(|t| t.ca_cert.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = stop.clone();
        let prober = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let client = http_client(ca.as_deref());
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
                        if r.status() == 200 {
                            let _ = tx.send(());
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let result = loop {
            if rx.try_recv().is_ok() {
                break Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                break Err(status);
            }
            if Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
                panic!("berth did not answer /healthz within {START_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stop.store(true, Ordering::Relaxed);
        let _ = prober.join();
        result
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends SIGTERM (the shell's `kill`, present even where procps is not) without waiting.
    pub fn terminate(&mut self) {
        let pid = self.pid().to_string();
        run(Command::new("sh").args(["-c", "kill -TERM \"$0\"", &pid])).assert_success();
    }

    /// Waits for the process to exit, at most `timeout`; panics after that.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("berth is not running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!("berth did not exit within {timeout:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up. The data folder stays; [`Berth::restart`] starts again.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM; it must exit 0) if it runs, then starts it again on
    /// the same data folder, on a port of its own choosing: [`Berth::host`], [`Berth::url`] and
    /// the like give the new address afterwards (compute them again; do not keep the old ones).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.terminate();
            let status = self.wait_exit(Duration::from_secs(40));
            assert!(status.success(), "berth exited with {status} after SIGTERM\n{}", self.logs());
        }
        self.child = None;
        self.spawn_until_healthy();
    }

    /// Like [`Berth::restart`], with changed options (admin password, anonymous mode, extra
    /// environment; TLS stays as it was), e.g. `b.restart_with(|o| o.anonymous("pull"))`.
    pub fn restart_with(&mut self, change: impl FnOnce(BerthBuilder) -> BerthBuilder) {
        let tls = self.opts.tls;
        self.opts = change(self.opts.clone());
        self.opts.tls = tls;
        self.restart();
    }

    // --------------------------------------------------------------------------------------
    // Clients

    /// The environment for client tools: HOME, XDG folders, auth file and TMPDIR in the test
    /// folder, and an empty registries.conf, so nothing is read from or written to the user's.
    pub fn client_env(&self, cmd: &mut Command) {
        self.clients().apply(cmd);
    }

    /// The clients' environment in this test's folder, to run clients from another thread.
    pub fn clients(&self) -> ClientEnv {
        ClientEnv { dir: self.dir.path().to_owned() }
    }

    /// Runs another client (podman, buildah) with `args` in the test's environment.
    pub fn client(&self, program: &str, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.client_env(&mut cmd);
        run(&mut cmd)
    }

    /// Runs `skopeo --insecure-policy --command-timeout 120s <args>` in the test's environment.
    pub fn skopeo(&self, args: &[&str]) -> CmdOutput {
        self.clients().skopeo(args)
    }

    /// Runs `crates/berth/tests/python/oras_roundtrip.py` (oras-py) against this server in
    /// `workdir`: `mode` is "push" or "roundtrip", `file` is relative to `workdir`, the pull goes
    /// to `workdir/<outdir>`, `auth_backend` is oras-py's ("basic" or "token").
    #[allow(clippy::too_many_arguments)]
    pub fn oras(
        &self,
        mode: &str,
        password: &str,
        repo_tag: &str,
        workdir: &Path,
        file: &str,
        outdir: &str,
        chunk_size: usize,
        auth_backend: &str,
    ) -> CmdOutput {
        let mut cmd = Command::new(python());
        let target = format!("{}/{repo_tag}", self.host());
        cmd.arg(python_scripts().join("oras_roundtrip.py")).args([
            mode,
            &self.host(),
            "admin",
            password,
            &target,
            file,
            outdir,
            &chunk_size.to_string(),
            auth_backend,
        ]);
        self.client_env(&mut cmd);
        cmd.current_dir(workdir);
        run(&mut cmd)
    }

    /// `skopeo copy` of a local layout into this registry as admin (plain HTTP, or HTTPS
    /// trusting the test CA).
    pub fn push(&self, image: &OciImage, name: &str) -> CmdOutput {
        let (creds, src, dst) = (self.creds(), image.oci_ref(), self.docker_ref(name));
        let mut args = vec!["copy", "--dest-creds", &creds];
        let cert_dir;
        match &self.tls {
            Some(t) => {
                cert_dir = t.cert_dir.display().to_string();
                args.extend(["--dest-cert-dir", &cert_dir]);
            }
            None => args.push("--dest-tls-verify=false"),
        }
        args.extend([src.as_str(), dst.as_str()]);
        self.skopeo(&args)
    }

    /// `skopeo copy` from this registry (as admin) into a fresh layout at `dir` with `tag`;
    /// returns the command output (check it) and the layout path.
    pub fn pull(&self, name: &str, dir: &Path, tag: &str) -> CmdOutput {
        let (creds, src, dst) = (self.creds(), self.docker_ref(name), format!("oci:{}:{tag}", dir.display()));
        self.skopeo(&["copy", "--src-creds", &creds, "--src-tls-verify=false", &src, &dst])
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("==== berth logs (test folder {}) ====\n{}", self.dir.path().display(), self.logs());
        }
    }
}

/// A reqwest client (HTTP/1.1 and HTTP/2), trusting `ca` if given, with a generous timeout.
pub fn http_client(ca: Option<&Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(120)).no_proxy();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The password in Berth's first-start banner: the indented line after "generated password:".
pub fn parse_generated_password(stdout: &str) -> Option<String> {
    let mut lines = stdout.lines().skip_while(|l| !l.contains("generated password"));
    lines.next()?;
    lines.map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

/// Parses Prometheus text and sums the samples of `metric` whose labels include all `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            if name != metric {
                return None;
            }
            let all = labels.iter().all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

// ------------------------------------------------------------------------------------------
// Python / oras

/// The Python interpreter with `oras`: $BERTH_TEST_PYTHON, else `<repo>/.venv/bin/python`.
/// Panics (fails the test) when neither exists: the e2e tests never pass silently.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "BERTH_TEST_PYTHON={} does not exist; run ./scripts/test.sh to set up the test tools", p.display());
        return p;
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with oras: {} is missing and BERTH_TEST_PYTHON is unset. Run ./scripts/test.sh \
         (it installs skopeo, openssl and oras in .venv) instead of plain cargo test",
        venv.display()
    );
    venv
}

/// The folder of the Python helper scripts (`crates/berth/tests/python`).
pub fn python_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

// ------------------------------------------------------------------------------------------
// OCI image layouts

/// Random bytes from a splitmix64 generator seeded by the clock and a process-wide counter.
pub fn random_bytes(n: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut s = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A ustar archive holding one regular file.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100);
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |off: usize, len: usize, value: &str| {
        h[off..off + value.len()].copy_from_slice(value.as_bytes());
        debug_assert!(value.len() <= len);
    };
    field(100, 8, "0000644\0");
    field(108, 8, "0000000\0");
    field(116, 8, "0000000\0");
    field(124, 12, &format!("{:011o}\0", content.len()));
    field(136, 12, &format!("{:011o}\0", 1_700_000_000u64));
    field(156, 1, "0");
    field(257, 6, "ustar\0");
    field(263, 2, "00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// A valid gzip stream of `data` using stored (uncompressed) deflate blocks: clients detect it
/// as gzip and keep it as is, and no compression library is needed.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An image in an OCI layout on disk: its manifest, config and layers, with digests.
#[derive(Debug, Clone)]
pub struct OciImage {
    pub dir: PathBuf,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// (digest, bytes) of each layer, in manifest order.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl OciImage {
    /// Writes (or adds to) the layout at `dir` an image tagged `tag` with one layer per entry of
    /// `layer_sizes`, each a gzip'd tar holding a file of that many random bytes.
    pub fn write(dir: &Path, tag: &str, layer_sizes: &[usize]) -> OciImage {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |b: &[u8]| {
            let d = sha256(b);
            std::fs::write(blobs.join(&d["sha256:".len()..]), b).unwrap();
            d
        };
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, &size) in layer_sizes.iter().enumerate() {
            let tar = tar_one_file(&format!("layer{i}.bin"), &random_bytes(size));
            diff_ids.push(sha256(&tar));
            let gz = gzip_stored(&tar);
            layers.push((put(&gz), gz));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["/layer0.bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layer_sizes.iter().map(|_| serde_json::json!({"created_by": "berth e2e harness"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let config_digest = put(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": { "mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len() },
            "layers": layers.iter().map(|(d, b)| serde_json::json!({"mediaType": LAYER_TYPE, "digest": d, "size": b.len()})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest_digest = put(&manifest);
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index_path = dir.join("index.json");
        let mut index: serde_json::Value = match std::fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}),
        };
        index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }));
        std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
        OciImage { dir: dir.to_owned(), tag: tag.to_owned(), manifest, manifest_digest, config, config_digest, layers }
    }

    /// Reads the image tagged `tag` from the layout at `dir`, verifying every digest.
    pub fn read(dir: &Path, tag: &str) -> OciImage {
        let blob = |d: &str| {
            let b = std::fs::read(dir.join("blobs").join(d.replacen(':', "/", 1)))
                .unwrap_or_else(|e| panic!("blob {d} missing from {}: {e}", dir.display()));
            assert_eq!(sha256(&b), d, "blob {d} in {} does not match its digest", dir.display());
            b
        };
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let desc = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}: {index}", dir.display()));
        let manifest_digest = desc["digest"].as_str().unwrap().to_owned();
        let manifest = blob(&manifest_digest);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let config_digest = m["config"]["digest"].as_str().unwrap().to_owned();
        let config = blob(&config_digest);
        let layers = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let d = l["digest"].as_str().unwrap().to_owned();
                let b = blob(&d);
                (d, b)
            })
            .collect();
        OciImage { dir: dir.to_owned(), tag: tag.to_owned(), manifest, manifest_digest, config, config_digest, layers }
    }

    /// `oci:<dir>:<tag>` for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Panics unless `other` has byte-identical manifest, config and layers.
    pub fn assert_same_content(&self, other: &OciImage) {
        assert_eq!(other.manifest_digest, self.manifest_digest, "manifest digest differs");
        assert!(other.manifest == self.manifest, "manifest bytes differ");
        assert_eq!(other.config_digest, self.config_digest, "config digest differs");
        assert!(other.config == self.config, "config bytes differ");
        assert_eq!(other.layers.len(), self.layers.len(), "layer count differs");
        for ((d1, b1), (d2, b2)) in self.layers.iter().zip(&other.layers) {
            assert_eq!(d1, d2, "layer digest differs");
            assert!(b1 == b2, "layer {d1} bytes differ ({} vs {} bytes)", b1.len(), b2.len());
        }
    }

    /// Every blob of the image by digest: manifest, config, layers.
    pub fn blobs(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        m.insert(self.config_digest.clone(), self.config.clone());
        for (d, b) in &self.layers {
            m.insert(d.clone(), b.clone());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address is read from the start line in both log formats, and only from whole lines.
    #[test]
    fn listening_addr_from_text_and_json_logs() {
        let text = "2026-01-01T00:00:00.000000Z  WARN berth: something\n\
            2026-01-01T00:00:00.000001Z  INFO berth: Berth is listening version=\"0.1.0\" url=\"http://127.0.0.1:44883\" data_dir=/tmp/d anonymous=\"off\"\n\
            2026-01-01T00:00:00.000002Z  INFO berth: metrics are served without authentication here url=\"http://127.0.0.2:37809/metrics\"\n";
        assert_eq!(listening_addr(text), Some(SocketAddr::from(([127, 0, 0, 1], 44883))));
        assert_eq!(
            log_field(text, "metrics are served without authentication here", "url").as_deref(),
            Some("http://127.0.0.2:37809/metrics")
        );
        let json = "{\"timestamp\":\"2026-01-01T00:00:00Z\",\"level\":\"INFO\",\"message\":\"Berth is listening\",\"version\":\"0.1.0\",\
            \"url\":\"https://127.0.0.1:40459\",\"data_dir\":\"/tmp/d\",\"anonymous\":\"off\",\"target\":\"berth\"}\n";
        assert_eq!(listening_addr(json), Some(SocketAddr::from(([127, 0, 0, 1], 40459))));
        // A line still being written, or another line, is not the start line.
        assert_eq!(listening_addr(json.trim_end()), None);
        assert_eq!(listening_addr("INFO berth: Berth is starting url=\"http://127.0.0.1:1\"\n"), None);
    }

    /// The hand-made gzip and tar are what the system's gzip and tar read back.
    #[test]
    fn gzip_and_tar_are_valid() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, 65535, 65536, 200_000] {
            let content = random_bytes(size);
            let tar = tar_one_file("payload.bin", &content);
            assert_eq!(tar.len() % 512, 0);
            let gz = dir.path().join(format!("l{size}.tar.gz"));
            std::fs::write(&gz, gzip_stored(&tar)).unwrap();
            let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
            assert!(out.status.success(), "gzip: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == tar, "gzip -dc of {size} bytes differs");
            let x = dir.path().join(format!("x{size}"));
            std::fs::create_dir_all(&x).unwrap();
            run(Command::new("tar").arg("-xzf").arg(&gz).arg("-C").arg(&x)).assert_success();
            assert!(std::fs::read(x.join("payload.bin")).unwrap() == content, "tar of {size} bytes differs");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Faults between Berth and its stores

/// What a [`FaultProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward bytes both ways.
    Pass = 0,
    /// Close every connection at once (also the ones open): the server is gone.
    Down = 1,
    /// Answer every HTTP request `503 Slow Down` (as S3 does when overloaded) and close.
    Http503 = 2,
}

/// A TCP proxy on 127.0.0.1 in front of a real server (PostgreSQL, the S3 server), switched
/// between passing traffic and failing, to test what Berth does when a store fails and recovers.
/// It runs on a thread of its own, so it works from sync and async tests alike.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
    epoch: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(target: SocketAddr) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(Fault::Pass as u8));
        let epoch = Arc::new(AtomicU64::new(0));
        let (m, ep) = (mode.clone(), epoch.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else { continue };
                    let (m, ep) = (m.clone(), ep.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        match m.load(Ordering::SeqCst) {
                            1 => return,
                            2 => {
                                let mut buf = vec![0u8; 65536];
                                let mut seen = Vec::new();
                                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                    match inbound.read(&mut buf).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                                    }
                                }
                                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                                let head = format!("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                                let _ = inbound.write_all(head.as_bytes()).await;
                                let _ = inbound.write_all(body.as_bytes()).await;
                                return;
                            }
                            _ => {}
                        }
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                        let started = ep.load(Ordering::SeqCst);
                        let watch = async {
                            // A switch away from Pass cuts the connections that were open.
                            loop {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                if ep.load(Ordering::SeqCst) != started {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = watch => {}
                        }
                    });
                }
            });
        });
        FaultProxy { addr, mode, epoch }
    }

    /// Switches, and returns once the connections that were open are cut.
    pub fn set(&self, fault: Fault) {
        self.mode.store(fault as u8, Ordering::SeqCst);
        if fault != Fault::Pass {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            // Every forwarding task looks at the epoch every 20 ms.
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// An HTTPS front (a fresh private CA, HTTP/1.1 only) for a plain-HTTP server on 127.0.0.1: an
/// S3 endpoint whose certificate only `storage.ca_file` makes trusted.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
}

impl TlsFront {
    pub fn start(target: SocketAddr) -> TlsFront {
        let ca = berth_testkit::tls::TestCa::new();
        let mut config = (*ca.server_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((inbound, _)) = listener.accept().await else { continue };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                    });
                }
            });
        });
        TlsFront { addr, ca_pem: ca.cert_pem().to_owned() }
    }
}

/// An S3 front on 127.0.0.1 that refuses deletions with 403 AccessDenied (`DELETE`, which also
/// aborts multipart uploads, and `POST ?delete`), as a bucket policy without `s3:DeleteObject`
/// and `s3:AbortMultipartUpload` would, and forwards every other request to the real server.
pub struct DenyDeletes {
    pub addr: SocketAddr,
}

impl DenyDeletes {
    pub fn start(target: SocketAddr) -> DenyDeletes {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let client = reqwest::Client::new();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| forward_unless_delete(client.clone(), target, req));
                axum::serve(listener, app).await.unwrap();
            });
        });
        DenyDeletes { addr }
    }
}

async fn forward_unless_delete(client: reqwest::Client, target: SocketAddr, req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = req.into_parts();
    let query_has_delete = parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "delete" || p.starts_with("delete=")));
    if parts.method == reqwest::Method::DELETE || (parts.method == reqwest::Method::POST && query_has_delete) {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        return (reqwest::StatusCode::FORBIDDEN, [("content-type", "application/xml")], xml).into_response();
    }
    let url = format!("http://{target}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut request = client.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    // Test traffic only: bodies are small enough to hold.
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let Ok(answer) = request.body(body).send().await else {
        return reqwest::StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = axum::response::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(axum::body::Body::from(bytes)).unwrap()
}
