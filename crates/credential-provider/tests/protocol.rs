//! The plugin through its real protocol: the kubelet's request JSON on stdin, the response on
//! stdout (golden), and every bad input refused with one line on stderr and nothing on stdout.
//! Exchange mode talks to a tiny HTTP server on 127.0.0.1 that records what reached it.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn plugin(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-credential-provider"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("BERTH_CP_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin); // the plugin may stop reading early (size limit)
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn token(exp: u64) -> String {
    let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2ln", b(json!({"alg": "RS256", "kid": "k"})), b(json!({"iss": "https://kubernetes.default.svc.cluster.local", "aud": ["registry.example.com"], "exp": exp, "sub": "system:serviceaccount:team-a:puller"})))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Seconds of a Go duration below an hour (`4m30s`, `59s`).
fn go_secs(d: &str) -> u64 {
    let d = d.trim_end_matches('s');
    match d.split_once('m') {
        Some((m, s)) => m.parse::<u64>().unwrap() * 60 + s.parse::<u64>().unwrap(),
        None => d.parse().unwrap(),
    }
}

/// The request of KEP-4412 for a pod's image.
fn request(image: &str, token: Option<&str>, annotations: bool) -> Vec<u8> {
    let mut r = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": image});
    if let Some(t) = token {
        r["serviceAccountToken"] = json!(t);
    }
    if annotations {
        r["serviceAccountAnnotations"] = json!({"berth.example/robot": "robot$apps+team-a"});
    }
    r.to_string().into_bytes()
}

#[test]
fn pass_through_golden_responses() {
    let t = token(now() + 3600);
    for annotations in [false, true] {
        let out = plugin(&[], &[], &request("registry.example.com:5000/apps/web:v1", Some(&t), annotations));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stderr.is_empty());
        let got: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "kind": "CredentialProviderResponse",
                "cacheKeyType": "Registry",
                "cacheDuration": "5m0s",
                "auth": {"registry.example.com:5000": {"username": "jwt", "password": t}}
            })
        );
    }
    // The user name from a flag or the environment; the cache never outlives the token.
    let short = token(now() + 120);
    let out = plugin(&["--username", "robot$apps+team-a"], &[], &request(&format!("registry.example.com/apps/web@sha256:{}", "0a".repeat(32)), Some(&short), false));
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["auth"]["registry.example.com"]["username"], "robot$apps+team-a");
    let secs = go_secs(got["cacheDuration"].as_str().unwrap());
    assert!((55..=60).contains(&secs), "gone 60 s before the token's expiry: {got}");
    let out = plugin(&["--expiry-margin", "10"], &[], &request("registry.example.com/apps/web", Some(&short), false));
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!((105..=110).contains(&go_secs(got["cacheDuration"].as_str().unwrap())), "{got}");
    let out = plugin(&[], &[("BERTH_CP_USERNAME", "not-relevant"), ("BERTH_CP_MAX_CACHE", "60")], &request("registry.example.com/a", Some(&t), false));
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((got["auth"]["registry.example.com"]["username"].as_str(), got["cacheDuration"].as_str()), (Some("not-relevant"), Some("1m0s")));
    // A token whose expiry cannot be read is not cached.
    let out = plugin(&[], &[], &request("registry.example.com/a", Some("opaque-token"), false));
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["cacheDuration"], "0s");
    // Without a token, when allowed: no credentials (the kubelet then pulls anonymously).
    let out = plugin(&["--allow-missing-token"], &[], &request("registry.example.com/a", None, false));
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["auth"], json!({}));
}

#[test]
fn bad_input_is_refused_with_one_line() {
    let t = token(now() + 3600);
    let big = vec![b' '; 70 * 1024];
    let cases: Vec<(&str, Vec<&str>, Vec<u8>, &str)> = vec![
        ("empty stdin", vec![], vec![], "was empty"),
        ("malformed JSON", vec![], b"{\"apiVersion\": ".to_vec(), "not a valid CredentialProviderRequest"),
        ("wrong apiVersion", vec![], br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","kind":"CredentialProviderRequest","image":"r.example/a"}"#.to_vec(), "unsupported apiVersion"),
        ("wrong kind", vec![], br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","image":"r.example/a"}"#.to_vec(), "unexpected kind"),
        ("missing token", vec![], request("registry.example.com/a", None, false), "no serviceAccountToken"),
        ("unparseable image", vec![], request("registry.example.com/App Name:v1", Some(&t), false), "cannot parse image reference"),
        ("oversized", vec![], big, "larger than"),
        ("unknown flag", vec!["--frobnicate"], request("registry.example.com/a", Some(&t), false), "unknown argument"),
        ("bad mode", vec!["--mode", "magic"], request("registry.example.com/a", Some(&t), false), "unknown mode"),
        ("exchange without a registry", vec!["--mode", "exchange"], request("registry.example.com/a", Some(&t), false), "exchange mode needs --registry-url"),
        ("bad margin", vec!["--expiry-margin", "1m"], request("registry.example.com/a", Some(&t), false), "is not a number of seconds"),
        ("pass-through, other registry", vec!["--registry-url", "https://registry.example.com"], request("evil.example/a", Some(&t), false), "not on --registry-url"),
    ];
    for (name, args, input, want) in cases {
        let out = plugin(&args, &[], &input);
        assert_eq!(out.code, 1, "{name}");
        assert!(out.stdout.is_empty(), "{name}: wrote to stdout: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{name}: {}", out.stderr);
    }
}

#[test]
fn help_and_version() {
    let out = plugin(&["--help"], &[], b"");
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("CredentialProviderConfig") && out.stdout.contains("--mode"));
    let out = plugin(&["--version"], &[], b"");
    assert!(out.stdout.starts_with("berth-credential-provider "));
}

/// A tiny HTTP server on 127.0.0.1: answers every request with `answer` and records the request
/// heads it received.
struct Server {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(answer: String) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                log.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Server { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn http_answer(status: &str, headers: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}", body.len())
}

fn exchange_args(url: &str) -> Vec<&str> {
    vec!["--mode", "exchange", "--registry-url", url, "--allow-insecure-loopback"]
}

#[test]
fn exchange_golden_response_is_per_image_and_bounded_by_the_registry_token() {
    let registry_token = token(now() + 3600);
    let berth = Server::start(http_answer("200 OK", "", &json!({"token": registry_token, "expires_in": 300, "issued_at": "2025-01-01T00:00:00Z"}).to_string()));
    let sa = token(now() + 3600);
    let url = berth.url();
    let image = format!("{}/apps/web:v1", berth.addr);
    let out = plugin(&exchange_args(&url), &[], &request(&image, Some(&sa), false));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    let key = format!("{}/apps/web", berth.addr);
    assert_eq!(
        got,
        json!({
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "kind": "CredentialProviderResponse",
            "cacheKeyType": "Image",
            "cacheDuration": "4m0s",
            "auth": {key.clone(): {"username": "berth-token", "password": registry_token}}
        }),
        "cached per image, 60 s before the registry token expires"
    );
    let seen = berth.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("GET /service/token?scope=repository:apps/web:pull HTTP/1.1\r\n"), "{}", seen[0]);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("jwt:{sa}"));
    assert!(seen[0].to_ascii_lowercase().contains(&format!("authorization: basic {}", basic.to_ascii_lowercase())), "{}", seen[0]);

    // The same through the environment.
    let env = [("BERTH_CP_MODE", "exchange"), ("BERTH_CP_REGISTRY_URL", url.as_str()), ("BERTH_CP_ALLOW_INSECURE_LOOPBACK", "1")];
    let out = plugin(&[], &env, &request(&format!("{}/apps/web@sha256:{}", berth.addr, "ab".repeat(32)), Some(&sa), false));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["auth"][&key]["password"], json!(registry_token));

    // A registry token that expires sooner than expires_in says bounds the cache; one that expires
    // within the margin is not cached.
    let soon = token(now() + 100);
    let berth = Server::start(http_answer("200 OK", "", &json!({"token": soon, "expires_in": 300}).to_string()));
    let out = plugin(&exchange_args(&berth.url()), &[], &request(&format!("{}/apps/web", berth.addr), Some(&sa), false));
    let secs = go_secs(serde_json::from_str::<Value>(&out.stdout).unwrap()["cacheDuration"].as_str().unwrap());
    assert!((35..=40).contains(&secs), "{}", out.stdout);
    let berth = Server::start(http_answer("200 OK", "", &json!({"token": registry_token, "expires_in": 45}).to_string()));
    let out = plugin(&exchange_args(&berth.url()), &[], &request(&format!("{}/apps/web", berth.addr), Some(&sa), false));
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["cacheDuration"], "0s");
}

#[test]
fn exchange_sends_the_token_only_to_the_configured_registry() {
    let t = token(now() + 3600);
    let berth = Server::start(http_answer("200 OK", "", &json!({"token": t, "expires_in": 300}).to_string()));
    let url = berth.url();
    let other_port = "127.0.0.1:1/apps/web:v1".to_owned();
    let on = |suffix: &str| format!("{}/{suffix}", berth.addr);
    let cases: Vec<(&str, Vec<&str>, String, &str)> = vec![
        ("plain HTTP without the flag", vec!["--mode", "exchange", "--registry-url", &url], on("apps/web:v1"), "plain HTTP would send the service-account token unencrypted"),
        ("plain HTTP to a non-loopback host", exchange_args("http://registry.example.com"), "registry.example.com/apps/web:v1".into(), "only to a loopback IP address"),
        ("a URL with a path", exchange_args("http://127.0.0.1:1/v2?x"), on("apps/web"), "no user, path, query or fragment"),
        ("an image on another registry", exchange_args(&url), "registry.example.com/apps/web:v1".into(), "not on --registry-url"),
        ("an image on another port", exchange_args(&url), other_port, "not on --registry-url"),
        ("a query in the image", exchange_args(&url), on("apps/web?scope=repository:*:push"), "cannot parse image reference"),
        ("a fragment in the image", exchange_args(&url), on("apps/web#x"), "cannot parse image reference"),
        ("percent-encoding in the image", exchange_args(&url), on("apps%2fweb"), "cannot parse image reference"),
        ("a space in the image", exchange_args(&url), on("apps/web :v1"), "cannot parse image reference"),
        ("a control character in the image", exchange_args(&url), on("apps/web\u{7}"), "cannot parse image reference"),
        ("a scope separator in the tag", exchange_args(&url), on("apps/web:v1:push"), "cannot parse image reference"),
        ("dot segments", exchange_args(&url), on("apps/../web"), "cannot parse image reference"),
    ];
    for (name, args, image, want) in cases {
        let out = plugin(&args, &[], &request(&image, Some(&t), false));
        assert_eq!(out.code, 1, "{name}: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{name}: wrote to stdout: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{name}: {}", out.stderr);
        assert!(berth.requests().is_empty(), "{name}: the token reached the server");
    }
}

#[test]
fn exchange_follows_no_redirect_and_reports_refusals() {
    let sa = token(now() + 3600);
    let elsewhere = Server::start(http_answer("200 OK", "", &json!({"token": "stolen", "expires_in": 300}).to_string()));
    let berth = Server::start(http_answer("307 Temporary Redirect", &format!("Location: {}/service/token\r\n", elsewhere.url()), ""));
    let out = plugin(&exchange_args(&berth.url()), &[], &request(&format!("{}/apps/web", berth.addr), Some(&sa), false));
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert!(out.stderr.contains("HTTP 307") && out.stderr.contains("not followed"), "{}", out.stderr);
    assert_eq!((berth.requests().len(), elsewhere.requests().len()), (1, 0), "the redirect was followed");

    let message = "no robots matched your token (identity provider \"cluster\")\nsecond line";
    let berth = Server::start(http_answer("401 Unauthorized", "", &json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}).to_string()));
    let out = plugin(&exchange_args(&berth.url()), &[], &request(&format!("{}/apps/web", berth.addr), Some(&sa), false));
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("Berth refused the service-account token (HTTP 401): no robots matched your token"), "{}", out.stderr);

    let berth = Server::start(http_answer("200 OK", "", "<html>a login page</html>"));
    let out = plugin(&exchange_args(&berth.url()), &[], &request(&format!("{}/apps/web", berth.addr), Some(&sa), false));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not JSON (is --registry-url Berth's address?)"), "{}", out.stderr);
}
