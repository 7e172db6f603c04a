//! End-to-end tests of the `berth` CLI (the real binary, on 127.0.0.1): `idp update` and
//! `robot update`, robots that would grant too much, the offline `user` commands, `gc --json`,
//! `gc`/`user` on a folder without an installation, the metrics listener, plain-text logs off a
//! terminal, and `--ca-file` with the server's own self-signed certificate marked as a CA.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{berth_command, run, Berth, CmdOutput, OciImage, ADMIN_PASSWORD};

/// A static JWKS (RFC 7515's P-256 example key) so providers need no network.
fn jwks() -> String {
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
    .to_string()
}

/// Runs the CLI against `b` as admin with `stdin`.
fn cli(b: &Berth, args: &[&str], stdin: &str) -> CmdOutput {
    let mut cmd = berth_command();
    cmd.args(args)
        .env("BERTH_SERVER", format!("http://{}", b.host()))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", b.admin_password())
        .env("HOME", b.dir());
    with_stdin(cmd, args, stdin)
}

/// Runs an offline command on `b`'s data folder.
fn offline(b: &Berth, args: &[&str], stdin: &str) -> CmdOutput {
    let mut cmd = berth_command();
    cmd.args(args).env("BERTH_DATA_DIR", &b.data_dir).env("HOME", b.dir());
    with_stdin(cmd, args, stdin)
}

fn with_stdin(mut cmd: Command, args: &[&str], stdin: &str) -> CmdOutput {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    CmdOutput::from_output(format!("berth {}", args.join(" ")), out)
}

fn json_of(out: &CmdOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{}", out.what, out.stdout))
}

/// No Rust debug formatting in what a person reads.
fn assert_plain(out: &CmdOutput) {
    let text = format!("{}{}", out.stdout, out.stderr);
    for debug in ["Error {", "Some(", "Other(", "kind:", "\\\"", "\u{1b}["] {
        assert!(!text.contains(debug), "{}: {debug:?} in the output:\n{text}", out.what);
    }
}

#[test]
fn idp_update_and_robot_update() {
    let b = Berth::start();
    let add = ["idp", "add", "generic", "--name", "k8s", "--issuer", "https://k8s.example", "--audience", "reg.example", "--jwks-file", "-"];
    cli(&b, &add, &jwks()).assert_success();
    // Adding it again (the old key-rotation advice) fails and names the command to use.
    let again = cli(&b, &add, &jwks()).assert_failure();
    assert!(again.stderr.contains("berth idp update"), "{}", again.stderr);
    assert_plain(&again);

    // Rotation / a new audience with `idp update`.
    let update = ["idp", "update", "generic", "--name", "k8s", "--issuer", "https://k8s.example", "--audience", "reg.example", "--audience", "other.example", "--jwks-file", "-"];
    let out = cli(&b, &update, &jwks()).assert_success();
    assert!(out.stdout.contains("identity provider k8s updated"), "{}", out.stdout);
    let shown = json_of(&cli(&b, &["idp", "show", "k8s", "--json"], "").assert_success());
    assert_eq!(shown["spec"]["audiences"], json!(["reg.example", "other.example"]));
    let missing = cli(&b, &["idp", "update", "generic", "--name", "nope", "--issuer", "https://n.example", "--audience", "a", "--jwks-file", "-"], &jwks());
    assert!(missing.success(), "update creates a missing provider (PUT): {}", missing.stderr);

    // Issuers differing by a trailing slash with a shared audience are refused.
    let dup = cli(&b, &["idp", "add", "generic", "--name", "k8s-dup", "--issuer", "https://K8S.example/", "--audience", "reg.example", "--jwks-file", "-"], &jwks())
        .assert_failure();
    assert!(dup.stderr.contains("\"k8s\"") && dup.stderr.contains("reg.example"), "{}", dup.stderr);

    cli(&b, &["project", "create", "library"], "").assert_success();
    // A federated robot without rules would accept every token of the provider.
    let norules = cli(&b, &["robot", "create", "ci", "--project", "library", "--idp", "k8s", "--allow", "library/*:pull"], "").assert_failure();
    assert!(norules.stderr.contains("no rules"), "{}", norules.stderr);
    // --allow outside the robot's project is refused, not rewritten to library/other/*.
    let outside = cli(&b, &["robot", "create", "ci", "--project", "library", "--idp", "k8s", "--rule", "sub=system:serviceaccount:ci:builder", "--allow", "other/*:pull"], "")
        .assert_failure();
    assert!(outside.stderr.contains("outside project") && outside.stderr.contains("library/other/*"), "{}", outside.stderr);
    assert_plain(&outside);
    cli(&b, &["robot", "create", "ci", "--project", "library", "--idp", "k8s", "--rule", "sub=system:serviceaccount:ci:builder", "--allow", "library/*:pull", "--description", "CI"], "")
        .assert_success();

    // `robot update` replaces the parts given and keeps the rest.
    let out = cli(&b, &["robot", "update", "ci", "--project", "library", "--rule", "sub~system:serviceaccount:ci:*", "--allow", "library/app:pull,push"], "").assert_success();
    assert!(out.stdout.contains("robot robot$library+ci updated"), "{}", out.stdout);
    let r = json_of(&cli(&b, &["robot", "show", "robot$library+ci", "--json"], "").assert_success());
    assert_eq!(r["rules"], json!([{"claim": "sub", "glob": "system:serviceaccount:ci:*"}]));
    assert_eq!(r["permissions"], json!([{"repositories": "library/app", "actions": ["pull", "push"]}]));
    assert_eq!((r["identityProvider"].as_str(), r["description"].as_str()), (Some("k8s"), Some("CI")));
    let out = cli(&b, &["robot", "update", "robot$library+ci", "--description", "builds"], "").assert_success();
    assert!(out.success());
    let r = json_of(&cli(&b, &["robot", "show", "robot$library+ci", "--json"], "").assert_success());
    assert_eq!((r["description"].as_str(), r["rules"].as_array().map(Vec::len)), (Some("builds"), Some(1)));
    let bad = cli(&b, &["robot", "update", "ci", "--project", "library", "--allow", "other/*:pull"], "").assert_failure();
    assert!(bad.stderr.contains("outside project"), "{}", bad.stderr);
    let gone = cli(&b, &["robot", "update", "nobody", "--project", "library", "--description", "x"], "").assert_failure();
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
}

#[test]
fn users_gc_json_and_metrics_listener() {
    // Port 0 for both listeners; Berth refuses a metrics_listen equal to listen (127.0.0.1:0)
    // as a whole, so the metrics listener takes another loopback address.
    let mut b = Berth::builder().env("BERTH_METRICS_LISTEN", "127.0.0.2:0").start();

    // The metrics listener needs no credentials; /metrics on the main listener does.
    let (main_metrics, side_metrics) = {
        let main = b.url("/metrics");
        // Its address is in the line Berth logs once it is bound.
        let side = b.wait_log_field("metrics are served without authentication here", "url");
        let http = b.http();
        support::block_on(async move {
            let m = http.get(&main).send().await.unwrap().status().as_u16();
            let s = http.get(&side).send().await.unwrap();
            (m, (s.status().as_u16(), s.text().await.unwrap()))
        })
    };
    assert_eq!(main_metrics, 401);
    assert_eq!(side_metrics.0, 200);
    assert!(side_metrics.1.contains("# TYPE"), "{}", side_metrics.1);

    // Offline user commands on the data folder, while the server runs.
    let list = offline(&b, &["user", "list"], "").assert_success();
    assert_eq!(list.stdout.trim(), "admin\tadmin");
    offline(&b, &["user", "set", "alice", "--admin"], "alice-password\n").assert_success();
    offline(&b, &["user", "set", "bob"], "bob-password\n").assert_success();
    let users = json_of(&offline(&b, &["user", "list", "--json"], "").assert_success());
    assert_eq!(
        users,
        json!([{"name": "admin", "admin": true, "disabled": false}, {"name": "alice", "admin": true, "disabled": false},
               {"name": "bob", "admin": false, "disabled": false}])
    );
    // The same through the admin API.
    let api_users: Value = {
        let req = b.admin(reqwest::Method::GET, "/api/v1/users");
        support::block_on(async move { req.send().await.unwrap().json().await.unwrap() })
    };
    assert_eq!(api_users, users);

    // A disabled user cannot log in (the server sees the change at once).
    let login = |b: &mut Berth, user: &str, pw: &str| {
        let req = b.http().get(b.url("/v2/")).basic_auth(user, Some(pw));
        support::block_on(async move { req.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(login(&mut b, "bob", "bob-password"), 200);
    offline(&b, &["user", "disable", "bob"], "").assert_success();
    let deadline = Instant::now() + Duration::from_secs(5);
    while login(&mut b, "bob", "bob-password") != 401 {
        assert!(Instant::now() < deadline, "bob still logs in after `berth user disable bob`");
        std::thread::sleep(Duration::from_millis(200));
    }
    offline(&b, &["user", "enable", "bob"], "").assert_success();
    assert_eq!(login(&mut b, "bob", "bob-password"), 200, "enabled again, with the same password");

    // The last enabled admin stays.
    offline(&b, &["user", "disable", "alice"], "").assert_success();
    for args in [&["user", "disable", "admin"][..], &["user", "delete", "admin"], &["user", "set", "admin"]] {
        let stdin = if args[1] == "set" { "new-admin-password\n" } else { "" };
        let out = offline(&b, args, stdin).assert_failure();
        assert!(out.stderr.contains("last enabled admin"), "{}", out.stderr);
        assert_plain(&out);
    }
    offline(&b, &["user", "delete", "alice"], "").assert_success();
    let out = offline(&b, &["user", "delete", "alice"], "").assert_failure();
    assert!(out.stderr.contains("no user \"alice\""), "{}", out.stderr);
    assert_eq!(login(&mut b, ADMIN_PASSWORD_USER, ADMIN_PASSWORD), 200);

    // gc --json prints one JSON object; logs on stderr are plain text (not a terminal).
    let gc = offline(&b, &["gc", "--json"], "").assert_success();
    let summary = json_of(&gc);
    for key in ["blobs_removed", "repository_links_removed", "stale_uploads_removed", "audit_events_removed"] {
        assert!(summary[key].is_u64(), "{key} in {summary}");
    }
    assert!(gc.stderr.contains("garbage collection finished"), "{}", gc.stderr);
    assert!(!gc.stderr.contains('\u{1b}'), "ANSI escapes in logs that go to a file:\n{}", gc.stderr);
    let text = offline(&b, &["gc"], "").assert_success();
    assert!(text.stdout.starts_with("garbage collection: "), "{}", text.stdout);
}

const ADMIN_PASSWORD_USER: &str = "admin";

#[test]
fn gc_and_user_refuse_a_folder_without_an_installation() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = dir.path().join("missing");
    for folder in [&empty, &missing] {
        for args in [&["gc"][..], &["gc", "--json"], &["user", "list"], &["user", "set", "alice"], &["user", "disable", "x"], &["user", "delete", "x"]] {
            let mut cmd = berth_command();
            cmd.args(args).arg("--data-dir").arg(folder);
            let out = with_stdin(cmd, args, "a-long-password\n").assert_failure();
            assert!(out.stderr.contains("holds no Berth installation"), "{}: {}", out.what, out.stderr);
            assert!(out.stderr.contains("--data-dir"), "says what to do: {}", out.stderr);
            assert_plain(&out);
        }
        assert!(!folder.join("berth.db").exists(), "{} got a database", folder.display());
    }
    assert!(!missing.exists(), "the missing folder was created");
}

/// Runs `openssl` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").args(args).current_dir(dir)).assert_success();
}

/// A `berth serve` with its own TLS files (the harness makes a CA-signed certificate; this test
/// needs a self-signed one). Killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = berth_command()
        .arg("serve")
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .env("BERTH_DATA_DIR", dir.join("data"))
        .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("BERTH_TLS__CERT", cert)
        .env("BERTH_TLS__KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut server = TlsServer { child, port: 0 };
    match support::wait_listening(&mut server.child, &log_path, 0, Duration::from_secs(60)) {
        Ok(addr) => server.port = addr.port(),
        Err(status) => panic!("berth serve exited with {status}:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default()),
    }
    server
}

#[test]
fn ca_file_accepts_a_self_signed_certificate_marked_as_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Self-signed, CA:TRUE, for 127.0.0.1: what many "make a certificate" guides produce, and
    // what curl --cacert and skopeo --cert-dir accept.
    openssl(d, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]);
    let server = serve_tls(d, &d.join("cert.pem"), &d.join("key.pem"));
    let cli = |url: &str, ca: Option<&Path>| {
        let mut cmd = berth_command();
        cmd.args(["project", "list"]).env("BERTH_SERVER", url).env("BERTH_USERNAME", "admin").env("BERTH_PASSWORD", ADMIN_PASSWORD).env("HOME", d);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        run(&mut cmd)
    };
    let url = format!("https://127.0.0.1:{}", server.port);
    cli(&url, Some(&d.join("cert.pem"))).assert_success();
    cli(&format!("https://localhost:{}", server.port), Some(&d.join("cert.pem"))).assert_success();

    // Without it: a sentence that says what to do, not rustls' enum names.
    let out = cli(&url, None).assert_failure();
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    assert_plain(&out);

    // Another self-signed certificate is still refused.
    openssl(d, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "other.key", "-out", "other.pem",
        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "subjectAltName=IP:127.0.0.1",
    ]);
    let out = cli(&url, Some(&d.join("other.pem"))).assert_failure();
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    assert_plain(&out);
}

/// Project members: local users get their role's access to the project's repositories (and no
/// other), a role change and a removal take effect at once, bad input is refused clearly.
#[tokio::test]
async fn project_members_get_their_roles_access() {
    let mut b = Berth::start();
    cli(&b, &["project", "create", "team"], "").assert_success();
    for user in ["dev", "viewer"] {
        let r = b.admin(reqwest::Method::PUT, &format!("/api/v1/users/{user}")).json(&serde_json::json!({"password": "password-123"})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let out = cli(&b, &["project", "member", "add", "team", "--user", "dev", "--role", "developer"], "").assert_success();
    assert!(out.stdout.contains("user dev is developer in project team"), "{}", out.stdout);
    cli(&b, &["project", "member", "add", "team", "--user", "viewer", "--role", "guest"], "").assert_success();
    cli(&b, &["project", "member", "add", "team", "--group", "/ops", "--role", "Maintainer"], "").assert_success();
    let out = cli(&b, &["project", "member", "list", "team"], "").assert_success();
    assert_eq!(out.stdout, "group\t/ops\tmaintainer\nuser\tdev\tdeveloper\nuser\tviewer\tguest\n");

    let src = OciImage::write(&b.path("src"), "v1", &[50_000]);
    let push = |b: &Berth, creds: &str, to: &str| {
        b.skopeo(&["copy", "--dest-creds", creds, "--dest-tls-verify=false", &src.oci_ref(), &b.docker_ref(to)])
    };
    let pull = |b: &Berth, creds: &str, from: &str, dir: &str| {
        b.skopeo(&["copy", "--src-creds", creds, "--src-tls-verify=false", &b.docker_ref(from), &format!("oci:{}:v1", b.path(dir).display())])
    };
    // A developer pushes and pulls in the project, not elsewhere.
    push(&b, "dev:password-123", "team/app:v1").assert_success();
    pull(&b, "dev:password-123", "team/app:v1", "dev-back").assert_success();
    let out = push(&b, "dev:password-123", "library/app:v1").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);
    // A guest pulls but may not push.
    pull(&b, "viewer:password-123", "team/app:v1", "viewer-back").assert_success();
    let out = push(&b, "viewer:password-123", "team/app:v2").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);
    assert!(out.stderr.contains("viewer is guest in project team, which does not allow push"), "the refusal names the role: {}", out.stderr);

    // A local user in a local group gets the group's role.
    let r = b.admin(reqwest::Method::PUT, "/api/v1/users/opsy").json(&serde_json::json!({"password": "password-123", "groups": ["/ops"]})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    push(&b, "opsy:password-123", "team/ops:v1").assert_success();
    let who: Value = b.http().get(b.url("/api/v1/whoami")).basic_auth("opsy", Some("password-123")).send().await.unwrap().json().await.unwrap();
    assert_eq!(who["roles"], json!([{"project": "team", "role": "maintainer", "via": ["group:/ops"]}]), "{who}");

    // Demoted: the next push is refused (the change moves the store's generation).
    cli(&b, &["project", "member", "add", "team", "--user", "dev", "--role", "guest"], "").assert_success();
    let out = push(&b, "dev:password-123", "team/app:v3").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);
    // Removed: not even a pull of the private project.
    let out = cli(&b, &["project", "member", "remove", "team", "--user", "viewer"], "").assert_success();
    assert!(out.stdout.contains("user viewer removed from project team"), "{}", out.stdout);
    let out = pull(&b, "viewer:password-123", "team/app:v1", "viewer-again").assert_failure();
    assert!(is_denied(&out.stderr), "{}", out.stderr);

    // Bad input.
    let out = cli(&b, &["project", "member", "add", "team", "--user", "dev", "--role", "owner"], "").assert_failure();
    assert!(out.stderr.contains("unknown role \"owner\"") && out.stderr.contains("project-admin"), "{}", out.stderr);
    let out = cli(&b, &["project", "member", "add", "nope", "--user", "dev", "--role", "guest"], "").assert_failure();
    assert!(out.stderr.contains("project \"nope\" does not exist"), "{}", out.stderr);
    let out = cli(&b, &["project", "member", "remove", "team", "--user", "viewer"], "").assert_failure();
    assert!(out.stderr.contains("is not a member of project \"team\""), "{}", out.stderr);
    cli(&b, &["project", "member", "add", "team", "--role", "guest"], "").assert_failure();
}

fn is_denied(text: &str) -> bool {
    let t = text.to_lowercase();
    ["denied", "unauthorized", "forbidden", "authentication required"].iter().any(|m| t.contains(m))
}

/// Delegated administration: a project admin (here through a group... of one local user) manages
/// their project's members and robots, and nothing of another project; refusals name the role.
#[tokio::test]
async fn project_admins_manage_their_project_only() {
    let mut b = Berth::start();
    for p in ["team", "other"] {
        cli(&b, &["project", "create", p], "").assert_success();
    }
    for user in ["lead", "dev"] {
        let r = b.admin(reqwest::Method::PUT, &format!("/api/v1/users/{user}")).json(&json!({"password": "password-123"})).send().await.unwrap();
        assert!(r.status().is_success());
    }
    cli(&b, &["project", "member", "add", "team", "--user", "lead", "--role", "project-admin"], "").assert_success();
    cli(&b, &["project", "member", "add", "other", "--user", "lead", "--role", "developer"], "").assert_success();
    let as_lead = |args: &[&str]| {
        let mut cmd = berth_command();
        cmd.args(args)
            .env("BERTH_SERVER", format!("http://{}", b.host()))
            .env("BERTH_USERNAME", "lead")
            .env("BERTH_PASSWORD", "password-123")
            .env("HOME", b.dir());
        with_stdin(cmd, args, "")
    };
    // In their project: members, robots (a federated one needs a provider: a static one here),
    // visibility.
    as_lead(&["project", "member", "add", "team", "--user", "dev", "--role", "developer"]).assert_success();
    let out = as_lead(&["project", "member", "list", "team"]).assert_success();
    assert!(out.stdout.contains("user\tdev\tdeveloper"), "{}", out.stdout);
    let out = as_lead(&["robot", "create", "ci", "--project", "team", "--allow", "team/*:pull,push"]).assert_success();
    assert!(out.stdout.contains("robot$team+ci"), "{}", out.stdout);
    let out = as_lead(&["robot", "list"]).assert_success();
    assert!(out.stdout.contains("robot$team+ci"), "{}", out.stdout);
    // Elsewhere: refused, naming the role and the role it takes.
    let out = as_lead(&["project", "member", "add", "other", "--user", "dev", "--role", "guest"]).assert_failure();
    assert!(out.stderr.contains("lead is developer in project other; managing members needs the project-admin role"), "{}", out.stderr);
    let out = as_lead(&["robot", "create", "ci", "--project", "other", "--allow", "other/*:pull"]).assert_failure();
    assert!(out.stderr.contains("managing robots needs the project-admin role"), "{}", out.stderr);
    let out = as_lead(&["project", "create", "mine"]).assert_failure();
    assert!(out.stderr.contains("HTTP 403"), "{}", out.stderr);
    let out = as_lead(&["idp", "list"]).assert_failure();
    assert!(out.stderr.contains("lead is not an administrator"), "{}", out.stderr);
    // A robot outside every project is for administrators.
    let out = as_lead(&["robot", "create", "robot$global", "--allow", "team/*:pull"]).assert_failure();
    assert!(out.stderr.contains("robots outside a project are managed by administrators"), "{}", out.stderr);
    // Demoted: the next call is refused.
    cli(&b, &["project", "member", "add", "team", "--user", "lead", "--role", "maintainer"], "").assert_success();
    let out = as_lead(&["robot", "delete", "robot$team+ci"]).assert_failure();
    assert!(out.stderr.contains("lead is maintainer in project team"), "{}", out.stderr);
}
