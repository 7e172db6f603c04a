//! The admin commands over a real SQLite store in a temp folder: `apply` is one transaction
//! (a document failing on its last robot writes nothing), is idempotent, and reports what the
//! CLI prints; concurrent creates of one robot or identity provider name have exactly one winner.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use berth_blob::FsBlobStore;
use berth_core::admin::types::{ApplyDocument, ApplyReport, RobotSpec};
use berth_core::{Core, CoreConfig, Error};
use berth_identity::federation::ProviderSpec;
use berth_identity::TokenIssuer;
use berth_meta::{MetadataStore, SqliteStore};
use serde_json::json;

struct Fixture {
    core: Arc<Core>,
    meta: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
    let key = meta.init_setting("registry_signing_key", &berth_identity::token::generate_signing_key().unwrap()).await.unwrap();
    let tokens = Arc::new(TokenIssuer::new(&key, "berth", "berth", Duration::from_secs(900)).unwrap());
    let blobs = Arc::new(FsBlobStore::open(dir.path().to_path_buf()).unwrap());
    let core = Core::new(meta.clone(), blobs, tokens, CoreConfig::default());
    Fixture { core, meta, _dir: dir }
}

/// A provider with static keys (no network).
fn provider(name: &str, issuer: &str, audiences: &[&str]) -> serde_json::Value {
    json!({
        "name": name, "issuer": issuer, "audiences": audiences,
        "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
    })
}

fn document(v: serde_json::Value) -> ApplyDocument {
    serde_json::from_value(v).unwrap()
}

fn pull(repos: &str) -> serde_json::Value {
    json!([{"repositories": repos, "actions": ["pull"]}])
}

/// Everything the stores hold of projects, providers and robots, and the generation.
async fn snapshot(meta: &SqliteStore) -> (usize, usize, usize, i64) {
    (
        meta.list_projects().await.unwrap().len(),
        meta.list_identity_providers().await.unwrap().len(),
        meta.list_robots(None).await.unwrap().len(),
        meta.federation_generation().await.unwrap(),
    )
}

fn changes(report: &ApplyReport) -> Vec<(String, String, String)> {
    report.changes.iter().map(|c| (c.kind.clone(), c.name.clone(), c.action.clone())).collect()
}

#[tokio::test]
async fn apply_failing_on_its_last_robot_writes_nothing() {
    let f = fixture().await;
    let before = snapshot(&f.meta).await;
    let doc = document(json!({
        "projects": [{"name": "library"}, {"name": "public", "public": true}],
        "identityProviders": [provider("gh", "https://gh.example", &["reg"])],
        "robots": [
            {"name": "ci", "project": "library", "permissions": pull("*")},
            {"name": "gh-ci", "project": "library", "identityProvider": "gh", "rules": [{"claim": "repository", "equals": "org/app"}], "permissions": pull("*")},
            {"name": "last", "identityProvider": "no-such-provider", "rules": [{"claim": "sub", "equals": "x"}], "permissions": pull("library/*")}
        ]
    }));
    let err = f.core.apply(&doc).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("no-such-provider")), "{err:?}");
    assert_eq!(snapshot(&f.meta).await, before, "a failed apply wrote something");
    assert!(f.meta.get_robot("robot$library+ci").await.unwrap().is_none());

    // The same document without the bad robot goes through whole.
    let mut good = doc.clone();
    good.robots.pop();
    let report = f.core.apply(&good).await.unwrap();
    assert_eq!(
        changes(&report),
        [
            ("project", "library", "created"),
            ("project", "public", "created"),
            ("identityProvider", "gh", "created"),
            ("robot", "robot$library+ci", "created"),
            ("robot", "robot$library+gh-ci", "created"),
        ]
        .map(|(k, n, a)| (k.to_owned(), n.to_owned(), a.to_owned()))
    );
    assert_eq!(report.secrets.keys().collect::<Vec<_>>(), ["robot$library+ci"], "only the static robot has a secret");
    let stored = f.meta.get_robot("robot$library+ci").await.unwrap().unwrap();
    assert!(berth_identity::password::verify(&report.secrets["robot$library+ci"], stored.secret_hash.as_deref().unwrap()));
}

#[tokio::test]
async fn apply_twice_is_unchanged() {
    let f = fixture().await;
    let doc = document(json!({
        "projects": [{"name": "library"}],
        "identityProviders": [provider("gh", "https://gh.example", &["reg"])],
        "robots": [
            {"name": "ci", "project": "library", "permissions": pull("*")},
            {"name": "robot$deploy", "permissions": [{"project": "library", "repositories": "*", "actions": ["pull", "push"]}]},
            {"name": "gh-ci", "project": "library", "identityProvider": "gh", "rules": [{"claim": "repository", "equals": "org/app"}], "permissions": pull("*")}
        ]
    }));
    let first = f.core.apply(&doc).await.unwrap();
    assert!(first.changes.iter().all(|c| c.action == "created"), "{:?}", first.changes);
    assert_eq!(first.secrets.len(), 2, "{:?}", first.secrets.keys());
    let hash = f.meta.get_robot("robot$deploy").await.unwrap().unwrap().secret_hash;
    let generation = f.meta.federation_generation().await.unwrap();

    let second = f.core.apply(&doc).await.unwrap();
    assert_eq!(second.changes.len(), first.changes.len());
    assert!(second.changes.iter().all(|c| c.action == "unchanged"), "{:?}", second.changes);
    assert!(second.secrets.is_empty(), "an unchanged robot's secret is never shown again");
    assert_eq!(f.meta.federation_generation().await.unwrap(), generation, "nothing was written");
    assert_eq!(f.meta.get_robot("robot$deploy").await.unwrap().unwrap().secret_hash, hash, "the secret is kept");
    // The report as the CLI reads it: no `secrets` member when there are none.
    let wire = serde_json::to_value(&second).unwrap();
    assert_eq!(wire.as_object().unwrap().keys().collect::<Vec<_>>(), ["changes"]);
    assert_eq!(wire["changes"][0], json!({"kind": "project", "name": "library", "action": "unchanged"}));

    // A change to one robot updates it alone and keeps its secret.
    let mut changed = doc.clone();
    changed.robots[1].description = Some("deploys".into());
    let third = f.core.apply(&changed).await.unwrap();
    let actions: Vec<&str> = third.changes.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["unchanged", "unchanged", "unchanged", "updated", "unchanged"]);
    assert!(third.secrets.is_empty());
    assert_eq!(f.meta.get_robot("robot$deploy").await.unwrap().unwrap().secret_hash, hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_robot_creates_have_one_winner() {
    let f = fixture().await;
    f.core.create_project(&serde_json::from_value(json!({"name": "library"})).unwrap()).await.unwrap();
    let spec: RobotSpec = serde_json::from_value(json!({"name": "ci", "project": "library", "permissions": pull("*")})).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (core, start) = (f.core.clone(), start.clone());
            let mut spec = spec.clone();
            spec.description = Some(format!("creator {i}"));
            tokio::spawn(async move {
                start.wait().await;
                core.create_robot(&spec).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(created) => winners.push(created),
            Err(Error::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    let won = &winners[0];
    let stored = f.meta.get_robot("robot$library+ci").await.unwrap().unwrap();
    assert_eq!(stored.description, won.robot.description, "the winner's robot is the one stored");
    let secret = won.secret.as_deref().expect("a static robot's secret is shown at creation");
    assert!(berth_identity::password::verify(secret, stored.secret_hash.as_deref().unwrap()), "the winner's secret works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identity_provider_creates_have_one_winner() {
    let f = fixture().await;
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (core, start) = (f.core.clone(), start.clone());
            let spec: ProviderSpec = serde_json::from_value(provider("gh", "https://gh.example", &[&format!("aud-{i}")])).unwrap();
            tokio::spawn(async move {
                start.wait().await;
                core.create_identity_provider(&spec).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(created) => winners.push(created),
            Err(Error::Conflict(m)) => assert!(m.contains("already exists") || m.contains("issuer"), "{m}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    let stored = f.core.get_identity_provider("gh").await.unwrap();
    assert_eq!(stored.spec.audiences, winners[0].spec.audiences, "the winner's provider is the one stored");
    assert_eq!(f.meta.list_identity_providers().await.unwrap().len(), 1);
}

#[tokio::test]
async fn commands_answer_with_the_application_error_kinds() {
    let f = fixture().await;
    assert!(matches!(f.core.get_project("nope").await, Err(Error::NotFound(_))));
    assert!(matches!(f.core.delete_robot("robot$nope").await, Err(Error::NotFound(_))));
    let bad: RobotSpec = serde_json::from_value(json!({"name": "ci", "project": "library", "permissions": pull("other/*")})).unwrap();
    assert!(matches!(f.core.create_robot(&bad).await, Err(Error::Invalid(m)) if m.contains("outside project")));
    // A robot of a project that does not exist: the store refuses it, naming the project.
    let orphan: RobotSpec = serde_json::from_value(json!({"name": "ci", "project": "library", "permissions": pull("*")})).unwrap();
    assert!(matches!(f.core.create_robot(&orphan).await, Err(Error::Conflict(m)) if m.contains("library")));
    let spec = serde_json::from_value(json!({"name": "library"})).unwrap();
    f.core.create_project(&spec).await.unwrap();
    assert!(matches!(f.core.create_project(&spec).await, Err(Error::Conflict(_))));
    let created = f.core.create_robot(&orphan).await.unwrap();
    assert!(matches!(f.core.delete_project("library").await, Err(Error::Conflict(_))), "robots still belong to it");
    let again = f.core.regenerate_robot_secret(&created.robot.name).await.unwrap();
    assert_ne!(again.secret, created.secret);
    f.core.delete_robot(&created.robot.name).await.unwrap();
    f.core.delete_project("library").await.unwrap();
    let filter = berth_core::admin::AuditFilter { since: Some("yesterday".into()), ..Default::default() };
    assert!(matches!(f.core.query_audit(&filter).await, Err(Error::Invalid(_))));
}

/// A login section's client secret: never shown by reads, kept by writes that leave it out
/// (the same client), replaced by writes that give one, dropped when the client changes.
#[tokio::test]
async fn client_secrets_are_never_shown_and_survive_round_trips() {
    let f = fixture().await;
    let spec = |secret: Option<&str>, client: &str| -> ProviderSpec {
        let mut login = json!({"clientId": client, "adminGroup": "admins"});
        if let Some(s) = secret {
            login["clientSecret"] = json!(s);
        }
        serde_json::from_value(json!({"name": "corp", "issuer": "https://kc.example/realms/acme", "login": login})).unwrap()
    };
    let stored_secret = |meta: Arc<SqliteStore>| async move {
        let r = meta.get_identity_provider("corp").await.unwrap().unwrap();
        r.config["login"]["clientSecret"].as_str().map(str::to_owned)
    };
    let view = f.core.create_identity_provider(&spec(Some("s1"), "berth")).await.unwrap();
    let wire = serde_json::to_value(&view).unwrap();
    assert_eq!(wire["spec"]["login"], json!({"clientId": "berth", "clientSecretSet": true, "adminGroup": "admins"}));
    assert!(!wire.to_string().contains("s1"), "{wire}");
    // What a read gives back, written again (berth idp update, an exported apply document).
    let read_back: ProviderSpec = serde_json::from_value(wire["spec"].clone()).unwrap();
    f.core.put_identity_provider("corp", &read_back).await.unwrap();
    assert_eq!(stored_secret(f.meta.clone()).await.as_deref(), Some("s1"));
    f.core.apply(&document(json!({"identityProviders": [wire["spec"].clone()]}))).await.unwrap();
    assert_eq!(stored_secret(f.meta.clone()).await.as_deref(), Some("s1"));
    f.core.put_identity_provider("corp", &spec(Some("s2"), "berth")).await.unwrap();
    assert_eq!(stored_secret(f.meta.clone()).await.as_deref(), Some("s2"));
    f.core.put_identity_provider("corp", &spec(None, "other-client")).await.unwrap();
    assert_eq!(stored_secret(f.meta.clone()).await, None, "another client does not inherit the secret");
    let listed = serde_json::to_value(f.core.list_identity_providers().await.unwrap()).unwrap();
    assert_eq!(listed[0]["spec"]["login"]["clientSecretSet"], json!(false));
}

/// Members in an apply document: written in the same transaction as the projects, idempotent,
/// and a member of a project that exists nowhere fails the whole document.
#[tokio::test]
async fn apply_writes_members_with_their_projects() {
    let f = fixture().await;
    let doc = document(json!({
        "projects": [{"name": "team-demo"}],
        "members": [
            {"project": "team-demo", "group": "team-demo", "role": "developer"},
            {"project": "team-demo", "user": "alice", "role": "projectAdmin"}
        ]
    }));
    let first = f.core.apply(&doc).await.unwrap();
    let members: Vec<_> = changes(&first).into_iter().filter(|c| c.0 == "member").collect();
    assert_eq!(
        members,
        [
            ("member".to_owned(), "team-demo/group:team-demo".to_owned(), "created".to_owned()),
            ("member".to_owned(), "team-demo/user:alice".to_owned(), "created".to_owned())
        ]
    );
    let listed = f.core.list_members("team-demo").await.unwrap();
    assert_eq!(listed.iter().map(|m| (m.name.as_str(), m.role.as_str())).collect::<Vec<_>>(), [("team-demo", "developer"), ("alice", "project-admin")]);
    let again = f.core.apply(&doc).await.unwrap();
    assert!(again.changes.iter().all(|c| c.action == "unchanged"), "{:?}", again.changes);
    let before = snapshot(&f.meta).await;
    let bad = document(json!({"projects": [{"name": "new-one"}], "members": [{"project": "nowhere", "user": "bob", "role": "guest"}]}));
    let e = f.core.apply(&bad).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("nowhere")), "{e:?}");
    assert_eq!(snapshot(&f.meta).await, before, "nothing of the failed document");
    let e = f.core.apply(&document(json!({"members": [{"project": "team-demo", "user": "bob", "role": "owner"}]}))).await.unwrap_err();
    assert!(matches!(&e, Error::Invalid(m) if m.contains("unknown role")), "{e:?}");
}
