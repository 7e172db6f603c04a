//! The plugin through its real protocol: the kubelet's request JSON on stdin, the response on
//! stdout (golden), and every bad input refused with one line on stderr and nothing on stdout.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

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
    let out = plugin(&["--username", "robot$apps+team-a"], &[], &request("registry.example.com/apps/web@sha256:00", Some(&short), false));
    let got: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["auth"]["registry.example.com"]["username"], "robot$apps+team-a");
    let d = got["cacheDuration"].as_str().unwrap().trim_end_matches('s');
    let secs: u64 = match d.split_once('m') {
        Some((m, s)) => m.parse::<u64>().unwrap() * 60 + s.parse::<u64>().unwrap(),
        None => d.parse().unwrap(),
    };
    assert!((85..=90).contains(&secs), "{got}");
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
