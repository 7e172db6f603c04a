//! The `berth apply` files in `examples/` are applied to a real server with the CLI, all of them
//! into one Berth (as an operator who follows several platform pages does), twice (the second
//! time changes nothing), so they cannot rot or silently rebind each other's robots. Then each
//! example's promise is checked with OIDC tokens shaped like the seeds' real GitHub, GitLab,
//! Forgejo and Kubernetes tokens (berth-testkit's claim sets): the providers' keys are swapped
//! for a test key (everything else as in the examples), and the token endpoint must grant
//! exactly what the docs say.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use berth_testkit::{claims, jws, Key, KeyKind};
use serde_json::{json, Value};
use support::{berth_command, run, Berth};

const AUD: &str = "registry.example.com";

/// Every `examples/*/berth.yaml`, sorted, with its parsed content.
fn example_files() -> Vec<(PathBuf, Value)> {
    let examples = support::repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("berth.yaml"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected an apply file per platform, found {files:?}");
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, doc)
        })
        .collect()
}

fn items<'a>(doc: &'a Value, kind: &str) -> impl Iterator<Item = &'a Value> {
    doc[kind].as_array().into_iter().flatten()
}

/// The full name of a robot entry: `robot$<project>+<name>` or `robot$<name>`.
fn robot_name(r: &Value) -> String {
    match r["project"].as_str() {
        Some(p) => format!("robot${p}+{}", r["name"].as_str().unwrap()),
        None => format!("robot${}", r["name"].as_str().unwrap()),
    }
}

/// No robot is defined by two examples (applying both would silently rebind it to the last
/// one's provider and rules), and a project or identity provider that several examples share is
/// defined identically by each.
#[test]
fn no_two_examples_define_the_same_object_differently() {
    let files = example_files();
    let mut problems = Vec::new();
    let mut robots: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut shared: BTreeMap<(String, String), (PathBuf, Value)> = BTreeMap::new();
    for (f, doc) in &files {
        for r in items(doc, "robots") {
            let name = robot_name(r);
            if let Some(first) = robots.insert(name.clone(), f.clone()) {
                problems.push(format!("robot {name} is defined by {} and {}: rename one", first.display(), f.display()));
            }
        }
        for kind in ["projects", "identityProviders"] {
            for item in items(doc, kind) {
                let key = (kind.to_owned(), item["name"].as_str().unwrap().to_owned());
                match shared.get(&key) {
                    Some((first, def)) if def != item => problems.push(format!(
                        "{kind} {:?} is defined differently by {} and {}: make the definitions equal or rename one",
                        key.1,
                        first.display(),
                        f.display()
                    )),
                    Some(_) => {}
                    None => {
                        shared.insert(key, (f.clone(), item.clone()));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn apply_file(b: &Berth, f: &std::path::Path) -> support::CmdOutput {
    run(berth_command()
        .args(["apply", "-f"])
        .arg(f)
        .env("BERTH_SERVER", format!("http://{}", b.host()))
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", b.admin_password()))
}

/// All examples applied one after the other into one Berth, then all again: the second round
/// changes nothing (an example that redefines another's object would show up as `updated`).
#[test]
fn every_example_apply_file_applies_idempotently_together() {
    let b = Berth::start();
    let files = example_files();
    for (f, _) in &files {
        let first = apply_file(&b, f).assert_success();
        assert!(first.stdout.contains("robot"), "{}: {}", f.display(), first.stdout);
    }
    for (f, _) in &files {
        let second = apply_file(&b, f).assert_success();
        assert!(
            second.stdout.lines().all(|l| l.starts_with("unchanged")),
            "{}: applying it again after the other examples changed something:\n{}",
            f.display(),
            second.stdout
        );
    }
}

// ------------------------------------------------------------------------------------------
// The examples' promises, with real tokens

/// A token over `claims` signed by the test key (berth-testkit's JWS with the key's ES256).
fn mint(key: &Key, claims: &Value) -> String {
    jws::sign(key, key.alg(), Value::Null, claims)
}

/// A GitHub Actions token (the seed's claims, 5 minutes) of `repository` at `git_ref`, run by
/// the event `event`.
fn github(repository: &str, git_ref: &str, event: &str) -> Value {
    let c = claims::github_for("https://token.actions.githubusercontent.com", AUD, claims::now(), repository, git_ref);
    claims::merge(c, json!({"event_name": event}))
}

/// A Forgejo Actions token: GitHub's claims (a push), Forgejo's issuer.
fn forgejo(repository: &str, git_ref: &str) -> Value {
    let c = claims::forgejo_for("https://code.example.com/api/actions", AUD, claims::now(), repository, git_ref);
    claims::merge(c, json!({"event_name": "push"}))
}

/// A GitLab CI ID token (the seed's claims, 1 hour) of `project_path` on `main`.
fn gitlab(project_path: &str, protected: bool) -> Value {
    let c = claims::gitlab_for("https://gitlab.com", AUD, claims::now(), project_path, "main");
    claims::merge(c, json!({"ref_protected": protected.to_string()}))
}

/// A projected Kubernetes service-account token (the seed's claims, 1 hour).
fn kubernetes(namespace: &str, sa: &str) -> Value {
    claims::kubernetes_for("https://kubernetes.default.svc.cluster.local", &[AUD], claims::now(), namespace, sa)
}

/// What the token endpoint grants `token` on `repo` when asked for pull and push: `None` when it
/// refuses the token (401), else the granted actions, sorted.
async fn granted(b: &Berth, token: &str, repo: &str) -> Option<Vec<String>> {
    let r = reqwest::Client::new()
        .get(format!("http://{}/service/token?scope=repository:{repo}:pull,push", b.host()))
        .basic_auth("jwt", Some(token))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if status == 401 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let jwt = body["token"].as_str().unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let mut actions: Vec<String> = claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == repo)
        .flat_map(|a| a["actions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()))
        .collect();
    actions.sort();
    Some(actions)
}

/// Each example does what its page says while all of them are applied together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_example_keeps_its_promise_with_all_examples_applied() {
    let b = Berth::start();
    let files = example_files();
    for (f, _) in &files {
        apply_file(&b, f).assert_success();
    }
    // The same providers with the test key instead of the issuers' real keys (no network).
    // An EC P-256 key (ES256) from berth-testkit, published as a static JWKS.
    let key = Key::generate(KeyKind::EcP256);
    let mut providers: BTreeMap<String, Value> = BTreeMap::new();
    for (_, doc) in &files {
        for p in items(doc, "identityProviders") {
            let mut p = p.clone();
            p["jwks"] = json!({"keys": [key.jwk()]});
            providers.insert(p["name"].as_str().unwrap().to_owned(), p);
        }
    }
    let overlay = b.path("overlay.json");
    std::fs::write(&overlay, json!({"identityProviders": providers.values().collect::<Vec<_>>()}).to_string()).unwrap();
    apply_file(&b, &overlay).assert_success();

    let pull = Some(vec!["pull".to_owned()]);
    let pull_push = Some(vec!["pull".to_owned(), "push".to_owned()]);
    let nothing = Some(Vec::new());
    let cases: Vec<(&str, Value, &str, Option<Vec<String>>)> = vec![
        // github-actions: every branch pushes library/app; only release branches push release images.
        ("GitHub main pushes the workflow's image", github("myorg/myrepo", "refs/heads/main", "push"), "library/app", pull_push.clone()),
        ("GitHub main cannot push a release image", github("myorg/myrepo", "refs/heads/main", "push"), "library/release/app", pull.clone()),
        ("GitHub feature branch cannot push a release image", github("myorg/myrepo", "refs/heads/feature-x", "push"), "library/release/app", pull.clone()),
        ("GitHub feature branch cannot push other images", github("myorg/myrepo", "refs/heads/feature-x", "push"), "library/tools", pull.clone()),
        ("GitHub release branch pushes a release image", github("myorg/myrepo", "refs/heads/release-1.2", "push"), "library/release/app", pull_push.clone()),
        ("GitHub release branch, manual run", github("myorg/myrepo", "refs/heads/release-1.2", "workflow_dispatch"), "library/release/app", pull_push.clone()),
        ("GitHub release branch, pull_request_target event", github("myorg/myrepo", "refs/heads/release-1.2", "pull_request_target"), "library/release/app", pull.clone()),
        ("GitHub pull request", github("myorg/myrepo", "refs/pull/12/merge", "pull_request"), "library/app", None),
        ("GitHub other repository", github("myorg/other", "refs/heads/main", "push"), "library/app", None),
        // forgejo-actions: the main branch of myorg/myrepo pushes library/*; the GitHub robots do not apply.
        ("Forgejo main pushes", forgejo("myorg/myrepo", "refs/heads/main"), "library/app", pull_push.clone()),
        ("Forgejo release branch is not GitHub's", forgejo("myorg/myrepo", "refs/heads/release-1.2"), "library/release/app", None),
        ("Forgejo other branch", forgejo("myorg/myrepo", "refs/heads/feature-x"), "library/app", None),
        // gitlab-ci: the project's protected refs push; every project of the group and its subgroups pulls.
        ("GitLab seed project, protected", gitlab("8gears/container-registry/harbor-workload-identity-federation", true), "library/image", pull_push.clone()),
        ("GitLab seed project, unprotected", gitlab("8gears/container-registry/harbor-workload-identity-federation", false), "library/image", pull.clone()),
        ("GitLab project directly in the group", gitlab("8gears/tools", false), "library/image", pull.clone()),
        ("GitLab project of a subgroup", gitlab("8gears/container-registry/other", false), "library/image", pull.clone()),
        ("GitLab other group with the same prefix", gitlab("8gearsx/app", true), "library/image", None),
        // kubernetes: namespace team-a pulls library; ci:builder pushes; other namespaces nothing.
        ("Kubernetes team-a pulls", kubernetes("team-a", "default"), "library/httpd", pull.clone()),
        ("Kubernetes team-a outside its project", kubernetes("team-a", "default"), "manifests/app", nothing.clone()),
        ("Kubernetes ci:builder pushes", kubernetes("ci", "builder"), "library/app", pull_push.clone()),
        ("Kubernetes team-b", kubernetes("team-b", "default"), "library/httpd", None),
        // flux: the source-controller and tenant-a's flux pull manifests, nothing else.
        ("Flux source-controller pulls", kubernetes("flux-system", "source-controller"), "manifests/app", pull.clone()),
        ("Flux tenant-a pulls", kubernetes("tenant-a", "flux"), "manifests/app", pull.clone()),
        ("Flux source-controller outside manifests", kubernetes("flux-system", "source-controller"), "library/httpd", nothing.clone()),
    ];
    let mut wrong = Vec::new();
    for (what, claims, repo, want) in cases {
        let got = granted(&b, &mint(&key, &claims), repo).await;
        if got != want {
            wrong.push(format!("{what}: on {repo} granted {got:?}, the docs promise {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
