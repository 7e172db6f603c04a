//! End-to-end workload identity federation: the real `berth` binary, configured with its own CLI
//! (`berth apply -f -`, `berth token explain`, `berth audit`), berth-testkit's OIDC test issuer
//! on 127.0.0.1 (discovery + JWKS, key rotation, outage, HTTPS with its own CA), and skopeo
//! logging in with a GitHub-shaped OIDC token as its password, as a CI job does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Stdio;

use berth_testkit::{claims, Flavor, IssuerOptions, KeyKind, TestIssuer};
use serde_json::{json, Value};
use support::{berth_command, run, Berth, OciImage};

const AUD: &str = "registry.example.com";

/// The seed's GitHub Actions claims for `repository` on `refs/heads/main`, from `issuer`.
fn github_claims(issuer: &TestIssuer, repository: &str) -> Value {
    claims::github_for(&issuer.issuer(), AUD, claims::now(), repository, "refs/heads/main")
}

/// A GitHub Actions token of `repository` signed by the issuer's signing key.
fn github(issuer: &TestIssuer, repository: &str) -> String {
    issuer.mint(github_claims(issuer, repository))
}

/// The seed's Kubernetes service-account token claims (nested `kubernetes.io`, `aud` an array)
/// for `namespace:sa`.
fn kubernetes_claims(issuer: &TestIssuer, namespace: &str, sa: &str) -> Value {
    claims::kubernetes_for(&issuer.issuer(), &[AUD], claims::now(), namespace, sa)
}

/// Runs the berth CLI against `b` with `stdin`.
fn cli(b: &Berth, args: &[&str], stdin: &str) -> support::CmdOutput {
    use std::io::Write as _;
    let mut cmd = berth_command();
    cmd.args(args)
        .env("BERTH_SERVER", format!("http://{}", b.host()))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", b.admin_password())
        .env("HOME", b.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    support::CmdOutput::from_output(format!("berth {}", args.join(" ")), out)
}

fn copy_with(b: &Berth, creds: &str, src: &OciImage, name: &str) -> support::CmdOutput {
    b.skopeo(&["copy", "--dest-creds", creds, "--dest-tls-verify=false", &src.oci_ref(), &b.docker_ref(name)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_job_pushes_and_pulls_with_its_oidc_token() {
    let issuer = TestIssuer::start(IssuerOptions::new(Flavor::GitHub)).await;
    let mut b = Berth::start();
    let doc = format!(
        r#"
projects:
  - name: library
identityProviders:
  - name: ci
    issuer: {issuer}
    audiences: [{AUD}]
    auditClaims: [repository, workflow, run_id, actor, ref, sha]
robots:
  - name: ci-app
    project: library
    identityProvider: ci
    rules:
      - {{claim: repository, equals: org/app}}
      - {{claim: ref, glob: "refs/heads/*"}}
    permissions:
      - {{repositories: "app", actions: [pull, push]}}
"#,
        issuer = issuer.issuer()
    );
    let out = cli(&b, &["apply", "-f", "-"], &doc).assert_success();
    assert!(out.stdout.contains("created   robot robot$library+ci-app"), "{}", out.stdout);
    let again = cli(&b, &["apply", "-f", "-"], &doc).assert_success();
    assert_eq!(again.stdout.matches("unchanged").count(), 3, "{}", again.stdout);

    // skopeo logs in with the OIDC token as its password and pushes, then pulls.
    let img = OciImage::write(&b.path("src"), "v1", &[50_000, 2_000]);
    let token = github(&issuer, "org/app");
    copy_with(&b, &format!("jwt:{token}"), &img, "library/app:v1").assert_success();
    let back = b.path("back");
    b.skopeo(&["copy", "--src-creds", &format!("not-relevant:{token}"), "--src-tls-verify=false", &b.docker_ref("library/app:v1"), &format!("oci:{}:v1", back.display())])
        .assert_success();
    img.assert_same_content(&OciImage::read(&back, "v1"));

    // Refused: another repository, and a token of another repository.
    copy_with(&b, &format!("jwt:{token}"), &img, "library/other:v1").assert_failure();
    let other = github(&issuer, "org/other");
    copy_with(&b, &format!("jwt:{other}"), &img, "library/app:v2").assert_failure();
    let r = b.http().get(b.url("/service/token?scope=repository:library/app:pull")).basic_auth("jwt", Some(&other)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("no robots matched your token"));
    let t = claims::now();
    let base = github_claims(&issuer, "org/app");
    let patched = |patch: Value| issuer.mint(claims::merge(base.clone(), patch));
    for (what, bad) in [
        ("wrong audience", patched(json!({"aud": "sts.amazonaws.com"}))),
        ("expired", patched(json!({"exp": t - 600, "iat": t - 900, "nbf": t - 900}))),
        ("not yet valid", patched(json!({"nbf": t + 900, "iat": t + 900, "exp": t + 1200}))),
        ("wrong issuer", patched(json!({"iss": "https://token.actions.githubusercontent.com"}))),
    ] {
        let out = copy_with(&b, &format!("jwt:{bad}"), &img, "library/app:refused");
        assert!(!out.success(), "{what}: skopeo succeeded");
    }

    // The token directly as Bearer on /v2 (Flux, go-containerregistry).
    let r = b.http().get(b.url("/v2/library/app/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v1"]));

    // Key rotation: a token signed with a new key works (Berth refetches the JWKS once).
    let (_, fetches) = issuer.fetch_count();
    issuer.rotate(KeyKind::Rsa2048);
    let rotated = github(&issuer, "org/app");
    copy_with(&b, &format!("jwt:{rotated}"), &img, "library/app:v2").assert_success();
    assert_eq!(issuer.fetch_count().1, fetches + 1, "exactly one refetch for the new kid");
    // The old token was verified before the rotation: that verification is cached (at most 5
    // minutes, never past its exp), so it keeps working without another fetch.
    let r = b.http().get(b.url("/v2/library/app/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(issuer.fetch_count().1, fetches + 1);

    // Issuer down: the cached keys keep working.
    issuer.set_down(true);
    let while_down = github(&issuer, "org/app");
    copy_with(&b, &format!("jwt:{while_down}"), &img, "library/app:v3").assert_success();

    // Explain a refused token with the CLI (exit 1, each rule with its reason).
    let out = cli(&b, &["token", "explain", "-"], &other);
    assert!(!out.success());
    assert!(out.stdout.contains("repository equals \"org/app\": repository is \"org/other\""), "{}", out.stdout);

    // The audit log has the pushes, with the robot and the GitHub claims.
    let out = cli(&b, &["audit", "--action", "push", "--json"], "").assert_success();
    let events: Value = serde_json::from_str(&out.stdout).unwrap();
    let e = &events.as_array().unwrap()[0];
    assert_eq!(e["robots"], json!(["robot$library+ci-app"]));
    assert_eq!(e["provider"], "ci");
    assert_eq!(e["claims"]["repository"], "org/app");
    assert_eq!(e["claims"]["workflow"], "Create Image and Push Using federated IDP", "{e}");
    // Guessing passwords from one address is rate-limited (30 failures per 5 minutes), whatever
    // the account; federated tokens are never limited.
    let client = reqwest::Client::new();
    let mut last = 0;
    for i in 0..31 {
        let r = client.get(b.url("/service/token")).basic_auth(format!("guess{i}"), Some("wrong-password")).send().await.unwrap();
        last = r.status().as_u16();
    }
    assert_eq!(last, 429, "the 31st failure from one address is refused with 429");
    let fresh = github(&issuer, "org/app");
    let r = client.get(b.url("/service/token?scope=repository:library/app:pull")).basic_auth("jwt", Some(&fresh)).send().await.unwrap();
    assert_eq!(r.status(), 200, "a valid OIDC token still works from the limited address");
    let _ = run; // keep the helper import used on every toolchain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_tokens_from_an_https_issuer_with_its_own_ca() {
    let b = Berth::start();
    let issuer = TestIssuer::start_https(IssuerOptions::new(Flavor::Kubernetes).key(KeyKind::Ed25519)).await;
    let ca = issuer.ca_pem().unwrap();
    let doc = json!({
        "projects": [{"name": "apps"}],
        "identityProviders": [
            {"name": "cluster", "preset": "kubernetes", "issuer": issuer.issuer(), "audiences": [AUD], "certificateAuthority": ca},
            {"name": "cluster-no-ca", "issuer": issuer.issuer(), "audiences": ["elsewhere"]}
        ],
        "robots": [{"name": "team-a-pull", "project": "apps", "identityProvider": "cluster",
                    "rules": [{"claim": "kubernetes.io.namespace", "equals": "team-a"}],
                    "permissions": [{"repositories": "*", "actions": ["pull", "push"]}]}]
    });
    cli(&b, &["apply", "-f", "-"], &doc.to_string()).assert_success();

    // `berth idp test`: the CA makes the HTTPS fetch work; without it the error says why.
    let out = cli(&b, &["idp", "test", "cluster"], "").assert_success();
    assert!(out.stdout.contains("OKP Ed25519"), "{}", out.stdout);
    let out = cli(&b, &["idp", "test", "cluster-no-ca"], "");
    assert!(!out.success());
    assert!(out.text_lower().contains("certificate"), "{}", out.stderr);

    // Any service account of namespace team-a pushes and pulls; team-b is refused.
    let img = OciImage::write(&b.path("src"), "v1", &[10_000]);
    let token = issuer.mint(kubernetes_claims(&issuer, "team-a", "puller"));
    copy_with(&b, &format!("jwt:{token}"), &img, "apps/web:v1").assert_success();
    let back = b.path("back");
    b.skopeo(&["copy", "--src-creds", &format!("jwt:{token}"), "--src-tls-verify=false", &b.docker_ref("apps/web:v1"), &format!("oci:{}:v1", back.display())])
        .assert_success();
    let other = issuer.mint(kubernetes_claims(&issuer, "team-b", "puller"));
    let r = reqwest::Client::new()
        .get(format!("http://{}/service/token?scope=repository:apps/web:pull", b.host()))
        .basic_auth("jwt", Some(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("no robots matched your token"), "{body}");
    assert!(!message.contains("cluster"), "the provider's name reached an unauthenticated caller: {body}");
    // The audit log records the Kubernetes identity of the pushes.
    let out = cli(&b, &["audit", "--action", "push", "--json"], "").assert_success();
    let events: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(events[0]["claims"]["kubernetes.io.namespace"], "team-a", "{}", out.stdout);
    assert_eq!(events[0]["claims"]["kubernetes.io.serviceaccount.name"], "puller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_of_the_issuer_verifies() {
    // The first key is EC P-256 (ES256); three more of the other kinds are published with it.
    let issuer = TestIssuer::start(IssuerOptions::new(Flavor::Generic)).await;
    let keys = [
        ("k1", issuer.signing_kid()),
        ("p384", issuer.add_key(KeyKind::EcP384)),
        ("ed", issuer.add_key(KeyKind::Ed25519)),
        ("rsa", issuer.add_key(KeyKind::Rsa2048)),
    ];
    let b = Berth::start();
    let doc = json!({
        "projects": [{"name": "library"}],
        "identityProviders": [{"name": "ci", "issuer": issuer.issuer(), "audiences": [AUD]}],
        "robots": [{"name": "ci", "project": "library", "identityProvider": "ci",
                    "rules": [{"claim": "repository", "equals": "org/app"}], "permissions": [{"actions": ["pull"]}]}]
    });
    cli(&b, &["apply", "-f", "-"], &doc.to_string()).assert_success();
    for (kid, id) in &keys {
        let alg = issuer.key(id).unwrap().alg();
        let token = issuer.mint_with(id, alg, Value::Null, github_claims(&issuer, "org/app"));
        let r = reqwest::Client::new()
            .get(format!("http://{}/service/token?scope=repository:library/app:pull", b.host()))
            .basic_auth("jwt", Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "key {kid}: {}", r.text().await.unwrap());
    }
    // Discovery advertises the algorithms; the default allow-list follows it.
    let out = cli(&b, &["idp", "test", "ci"], "").assert_success();
    for alg in ["ES256", "ES384", "EdDSA", "RS256"] {
        assert!(out.stdout.contains(alg), "{alg}: {}", out.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_commands_show_berths_reason() {
    // `skopeo login` and `podman login` with a refused OIDC token: containers/common prints only
    // "invalid username/password" and keeps the server's reason for the debug log, so the reason
    // (the 401 body's message, also in WWW-Authenticate's error_description) shows with
    // `skopeo --debug` / `podman --log-level=debug`; docs/federation.md says so.
    let issuer = TestIssuer::start(IssuerOptions::new(Flavor::GitHub)).await;
    let b = Berth::start();
    let doc = format!(
        "identityProviders:\n  - name: ci\n    issuer: {}\n    audiences: [{AUD}]\nrobots:\n  - name: only-app\n    identityProvider: ci\n    rules: [{{claim: repository, equals: org/app}}]\n    permissions: [{{repositories: \"app\", actions: [pull]}}]\n",
        issuer.issuer()
    );
    cli(&b, &["apply", "-f", "-"], &doc).assert_success();
    let other = github(&issuer, "org/other");
    // scripts/test.sh installs both.
    assert!(which("podman"), "podman is not installed: run ./scripts/test.sh, which installs it");
    for client in ["skopeo", "podman"] {
        let out = b.client(client, &["login", "--tls-verify=false", "-u", "jwt", "-p", &other, &b.host()]);
        assert!(!out.success(), "{client} login succeeded");
        eprintln!("{client} login printed: {}", out.stderr.trim());
        let debug_flag = if client == "podman" { "--log-level=debug" } else { "--debug" };
        let out = b.client(client, &[debug_flag, "login", "--tls-verify=false", "-u", "jwt", "-p", &other, &b.host()]);
        eprintln!("{client} {debug_flag} login printed: {}", out.stderr.trim());
        assert!(out.stderr.contains("no robots matched your token"), "{client}: {}", out.stderr);
        let good = github(&issuer, "org/app");
        b.client(client, &["login", "--tls-verify=false", "-u", "jwt", "-p", &good, &b.host()]).assert_success();
    }
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn cli_login_saves_the_server_and_credentials() {
    let b = Berth::start();
    let home = b.path("cli-home");
    std::fs::create_dir_all(&home).unwrap();
    let run_cli = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut cmd = berth_command();
        cmd.args(args)
            .env_remove("BERTH_SERVER")
            .env_remove("BERTH_USERNAME")
            .env_remove("BERTH_PASSWORD")
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        support::CmdOutput::from_output(format!("berth {}", args.join(" ")), child.wait_with_output().unwrap())
    };
    // Without a server or credentials, the error says what to do.
    let out = run_cli(&["project", "list"], "");
    assert!(!out.success() && out.stderr.contains("BERTH_SERVER"), "{}", out.stderr);
    let url = format!("http://{}", b.host());
    let out = run_cli(&["login", "--server", &url, "--username", "admin", "--password-stdin"], "wrong\n");
    assert!(!out.success() && out.stderr.contains("401"), "{}", out.stderr);
    run_cli(&["login", "--server", &url, "--username", "admin", "--password-stdin"], &format!("{}\n", b.admin_password())).assert_success();
    let saved = home.join(".config/berth/credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    }
    run_cli(&["project", "create", "team"], "").assert_success();
    let out = run_cli(&["project", "list"], "").assert_success();
    assert!(out.stdout.contains("team\tprivate"), "{}", out.stdout);
}

/// The kubelet plugin binary, built by `cargo test --workspace` next to this test's binary.
fn credential_provider() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("berth-credential-provider");
    assert!(bin.exists(), "{} is missing: run the suite with `cargo test --workspace` (or `cargo build -p berth-credential-provider`)", bin.display());
    bin
}

/// Runs the plugin as the kubelet does: the request on stdin, the response on stdout.
fn kubelet_asks(args: &[&str], image: &str, sa_token: &str) -> Value {
    use std::io::Write as _;
    let request = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": image, "serviceAccountToken": sa_token, "serviceAccountAnnotations": {}});
    let mut child = std::process::Command::new(credential_provider())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A plugin that refuses its arguments exits before reading stdin: its stderr says why.
    let written = child.stdin.take().unwrap().write_all(request.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "plugin failed ({written:?}): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_credential_provider_pass_through_and_exchange() {
    let issuer = TestIssuer::start(IssuerOptions::new(Flavor::Kubernetes)).await;
    let b = Berth::start();
    let doc = json!({
        "projects": [{"name": "apps"}],
        "identityProviders": [{"name": "cluster", "preset": "kubernetes", "issuer": issuer.issuer(), "audiences": [AUD]}],
        "robots": [{"name": "team-a-pull", "project": "apps", "identityProvider": "cluster",
                    "rules": [{"claim": "kubernetes.io.namespace", "equals": "team-a"}],
                    "permissions": [{"repositories": "*", "actions": ["pull"]}]}]
    });
    cli(&b, &["apply", "-f", "-"], &doc.to_string()).assert_success();
    let img = OciImage::write(&b.path("src"), "v1", &[20_000]);
    b.push(&img, "apps/web:v1").assert_success();
    let image = format!("{}/apps/web:v1", b.host());

    // Pass-through: the plugin's credentials are what containerd would use; skopeo pulls with them.
    let sa = issuer.mint(kubernetes_claims(&issuer, "team-a", "default"));
    let resp = kubelet_asks(&[], &image, &sa);
    let auth = &resp["auth"][b.host()];
    assert_eq!((auth["username"].as_str(), auth["password"].as_str()), (Some("jwt"), Some(sa.as_str())));
    let creds = format!("{}:{}", auth["username"].as_str().unwrap(), auth["password"].as_str().unwrap());
    let back = b.path("pulled");
    b.skopeo(&["copy", "--src-creds", &creds, "--src-tls-verify=false", &b.docker_ref("apps/web:v1"), &format!("oci:{}:v1", back.display())])
        .assert_success();
    img.assert_same_content(&OciImage::read(&back, "v1"));

    // A service account of another namespace is refused by Berth.
    let other = issuer.mint(kubernetes_claims(&issuer, "team-b", "default"));
    let resp = kubelet_asks(&[], &image, &other);
    let creds = format!("jwt:{}", resp["auth"][b.host()]["password"].as_str().unwrap());
    let out = b.skopeo(&["copy", "--src-creds", &creds, "--src-tls-verify=false", &b.docker_ref("apps/web:v1"), &format!("oci:{}:v2", back.display())]);
    assert!(!out.success());
    assert!(out.stderr.contains("no robots matched your token"), "{}", out.stderr);

    // Exchange mode: the plugin trades the token for a registry token; Berth accepts that on /v2.
    let url = format!("http://{}", b.host());
    let resp = kubelet_asks(&["--mode", "exchange", "--registry-url", &url, "--allow-insecure-loopback"], &image, &sa);
    // Scoped to the image's repository, so cached per image (not for the whole registry).
    assert_eq!(resp["cacheKeyType"], "Image", "{resp}");
    let auth = &resp["auth"][format!("{}/apps/web", b.host())];
    assert_eq!(auth["username"], "berth-token");
    let registry_token = auth["password"].as_str().unwrap();
    assert_ne!(registry_token, sa, "the service-account token does not reach the runtime");
    let creds = format!("berth-token:{registry_token}");
    let back2 = b.path("pulled2");
    b.skopeo(&["copy", "--src-creds", &creds, "--src-tls-verify=false", &b.docker_ref("apps/web:v1"), &format!("oci:{}:v1", back2.display())])
        .assert_success();
    // The exchange of a refused token fails in the plugin with Berth's message.
    use std::io::Write as _;
    let mut child = std::process::Command::new(credential_provider())
        .args(["--mode", "exchange", "--registry-url", &url, "--allow-insecure-loopback"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": image, "serviceAccountToken": other}).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no robots matched your token"), "{}", String::from_utf8_lossy(&out.stderr));
}
