//! Claim sets with the exact shape and values of the seed tokens (GitHub Actions, GitLab CI,
//! Kubernetes service accounts; Forgejo Actions, which follows GitHub), parameterised by issuer,
//! audience and time, plus [`merge`] (RFC 7386 JSON merge patch) to override fields.
//!
//! Every value is the seed's, except `iss`, `aud`, the times (spaced as in the seed) and `jti`,
//! which is a fresh UUID per call so that two tokens minted in the same second differ.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::Flavor;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The seed's GitHub Actions payload: repository `container-registry/federated-idp-examples`,
/// ref `refs/heads/main`, `workflow_dispatch`; `iat = now`, `nbf = now - 300`, `exp = now + 300`.
pub fn github(iss: &str, aud: &str, now: u64) -> Value {
    github_for(iss, aud, now, "container-registry/federated-idp-examples", "refs/heads/main")
}

/// [`github`] for another repository (`owner/name`) and ref, with `sub`, `repository_owner`,
/// `ref_type` and the workflow refs kept consistent.
pub fn github_for(iss: &str, aud: &str, now: u64, repository: &str, git_ref: &str) -> Value {
    let owner = repository.split('/').next().unwrap_or(repository);
    let ref_type = if git_ref.starts_with("refs/tags/") { "tag" } else { "branch" };
    let workflow_ref = format!("{repository}/.github/workflows/example_1.yml@{git_ref}");
    json!({
        "actor": "Vad1mo",
        "actor_id": "1492007",
        "aud": aud,
        "base_ref": "",
        "check_run_id": "56363837828",
        "event_name": "workflow_dispatch",
        "exp": now + 300,
        "head_ref": "",
        "iat": now,
        "iss": iss,
        "job_workflow_ref": workflow_ref,
        "job_workflow_sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56",
        "jti": jti(),
        "nbf": now.saturating_sub(300),
        "ref": git_ref,
        "ref_protected": "false",
        "ref_type": ref_type,
        "repository": repository,
        "repository_id": "1104004353",
        "repository_owner": owner,
        "repository_owner_id": "46576199",
        "repository_visibility": "public",
        "run_attempt": "1",
        "run_id": "19677834613",
        "run_number": "4",
        "runner_environment": "github-hosted",
        "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56",
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "workflow": "Create Image and Push Using federated IDP",
        "workflow_ref": workflow_ref,
        "workflow_sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56"
    })
}

/// The seed's GitLab CI payload: project `8gears/container-registry/harbor-workload-identity-federation`,
/// ref `main` (a branch name, not `refs/heads/main`), `runner_id` a JSON number 47561171, every
/// other id a string; `iat = now`, `nbf = now - 5`, `exp = now + 3600`.
pub fn gitlab(iss: &str, aud: &str, now: u64) -> Value {
    gitlab_for(iss, aud, now, "8gears/container-registry/harbor-workload-identity-federation", "main")
}

/// [`gitlab`] for another project path (`namespace/.../project`) and branch, with `sub`,
/// `namespace_path`, `ref_path` and `ci_config_ref_uri` kept consistent.
pub fn gitlab_for(iss: &str, aud: &str, now: u64, project_path: &str, branch: &str) -> Value {
    let namespace = project_path.rsplit_once('/').map_or(project_path, |(ns, _)| ns);
    json!({
        "project_id": "76366029",
        "project_path": project_path,
        "namespace_id": "1087575",
        "namespace_path": namespace,
        "user_id": "907142",
        "user_login": "vad1mo",
        "user_email": "vaba@gmail.com",
        "user_access_level": "owner",
        "pipeline_id": "2179265456",
        "pipeline_source": "push",
        "job_id": "12217223061",
        "ref": branch,
        "ref_type": "branch",
        "ref_path": format!("refs/heads/{branch}"),
        "ref_protected": "true",
        "runner_id": 47561171,
        "runner_environment": "self-hosted",
        "sha": "de7a8b6e3892321ac9d2305f26332dcdc775f1c2",
        "project_visibility": "public",
        "ci_config_ref_uri": format!("gitlab.com/{project_path}//.gitlab-ci.yml@refs/heads/{branch}"),
        "ci_config_sha": "de7a8b6e3892321ac9d2305f26332dcdc775f1c2",
        "jti": jti(),
        "iat": now,
        "nbf": now.saturating_sub(5),
        "exp": now + 3600,
        "iss": iss,
        "sub": format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
        "aud": aud
    })
}

/// The seed's Kubernetes service-account token (KEP-4412, pod `httpd` of service account
/// `default:default` on node `k3d-credential-provider-test-server-0`): `aud` is an ARRAY, the
/// nested `kubernetes.io` object holds namespace, node, pod and serviceaccount; `iat = nbf = now`,
/// `exp = now + 3600`.
pub fn kubernetes(iss: &str, aud: &[&str], now: u64) -> Value {
    kubernetes_for(iss, aud, now, "default", "default")
}

/// [`kubernetes`] for another namespace and service account, with `sub`
/// (`system:serviceaccount:<ns>:<sa>`) kept consistent.
pub fn kubernetes_for(iss: &str, aud: &[&str], now: u64, namespace: &str, serviceaccount: &str) -> Value {
    json!({
        "aud": aud,
        "exp": now + 3600,
        "iat": now,
        "iss": iss,
        "jti": jti(),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {
                "name": "k3d-credential-provider-test-server-0",
                "uid": "c922a6dd-d8af-4877-8a09-922898d7ddb5"
            },
            "pod": {
                "name": "httpd",
                "uid": "375b30f1-ef29-4477-b46a-aa80607b6cfc"
            },
            "serviceaccount": {
                "name": serviceaccount,
                "uid": "c871d5a5-d81d-4ce7-8c4b-2dd62dbde226"
            }
        },
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{serviceaccount}")
    })
}

/// A Forgejo Actions payload. Forgejo's claims follow GitHub's (there is no Forgejo seed token):
/// this is [`github`]'s claim set for repository `container-registry/federated-idp-examples` on
/// `refs/heads/main`, without the GitHub-only `check_run_id`, `runner_environment` and the
/// `*_id` members of owner and actor.
pub fn forgejo(iss: &str, aud: &str, now: u64) -> Value {
    forgejo_for(iss, aud, now, "container-registry/federated-idp-examples", "refs/heads/main")
}

/// [`forgejo`] for another repository (`owner/name`) and ref, kept consistent as by
/// [`github_for`].
pub fn forgejo_for(iss: &str, aud: &str, now: u64, repository: &str, git_ref: &str) -> Value {
    merge(
        github_for(iss, aud, now, repository, git_ref),
        json!({"check_run_id": null, "runner_environment": null, "actor_id": null, "repository_owner_id": null}),
    )
}

/// A minimal generic OIDC payload: `iss`, `aud`, `sub` `"test-subject"`, `iat`, `nbf = now`,
/// `exp = now + 300`, `jti`.
pub fn generic(iss: &str, aud: &str, now: u64) -> Value {
    json!({"iss": iss, "aud": aud, "sub": "test-subject", "iat": now, "nbf": now, "exp": now + 300, "jti": jti()})
}

/// The payload of a flavour's platform ([`generic`] for [`Flavor::Generic`]); Kubernetes gets
/// `aud: [aud]`.
pub fn preset(flavor: Flavor, iss: &str, aud: &str, now: u64) -> Value {
    match flavor {
        Flavor::Generic => generic(iss, aud, now),
        Flavor::GitHub => github(iss, aud, now),
        Flavor::GitLab => gitlab(iss, aud, now),
        Flavor::Kubernetes => kubernetes(iss, &[aud], now),
        Flavor::Forgejo => forgejo(iss, aud, now),
    }
}

/// RFC 7386 JSON merge patch: objects merge member by member (recursively), a `null` member
/// removes the member, anything else replaces. `merge(github(..), json!({"ref": "refs/heads/dev"}))`.
pub fn merge(base: Value, overrides: Value) -> Value {
    match (base, overrides) {
        (Value::Object(mut base), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    base.remove(&k);
                } else {
                    let old = base.remove(&k).unwrap_or(Value::Null);
                    base.insert(k, merge(old, v));
                }
            }
            Value::Object(base)
        }
        (_, Value::Object(patch)) => merge(Value::Object(serde_json::Map::new()), Value::Object(patch)),
        (_, other) => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_764_090_468;

    #[test]
    fn github_has_the_seed_values_and_spacing() {
        let c = github("https://token.actions.githubusercontent.com", "macfly4200.8gears.ch", NOW);
        assert_eq!(c["repository"], "container-registry/federated-idp-examples");
        assert_eq!(c["repository_owner"], "container-registry");
        assert_eq!(c["ref"], "refs/heads/main");
        assert_eq!(c["ref_type"], "branch");
        assert_eq!(c["sub"], "repo:container-registry/federated-idp-examples:ref:refs/heads/main");
        assert_eq!(c["actor"], "Vad1mo");
        assert_eq!(c["actor_id"], "1492007");
        assert_eq!(c["run_id"], "19677834613");
        assert_eq!(c["sha"], "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56");
        assert_eq!(
            c["job_workflow_ref"],
            "container-registry/federated-idp-examples/.github/workflows/example_1.yml@refs/heads/main"
        );
        assert_eq!(c["workflow"], "Create Image and Push Using federated IDP");
        assert_eq!(c["aud"], "macfly4200.8gears.ch");
        // The seed: iat 1764090468, nbf 1764090168, exp 1764090768.
        assert_eq!((c["iat"].as_u64(), c["nbf"].as_u64(), c["exp"].as_u64()), (Some(NOW), Some(1_764_090_168), Some(1_764_090_768)));
        assert!(c.as_object().unwrap().values().all(|v| v.is_string() || v.is_u64()));
    }

    #[test]
    fn github_for_keeps_sub_and_owner_consistent() {
        let c = github_for("i", "a", NOW, "myorg/myrepo", "refs/tags/v1");
        assert_eq!(c["sub"], "repo:myorg/myrepo:ref:refs/tags/v1");
        assert_eq!(c["repository_owner"], "myorg");
        assert_eq!(c["ref_type"], "tag");
    }

    #[test]
    fn gitlab_runner_id_is_a_number_and_ref_is_a_branch_name() {
        let c = gitlab("https://gitlab.com", "macfly4200.8gears.ch", 1_764_098_080);
        assert_eq!(c["runner_id"], json!(47561171));
        assert!(c["runner_id"].is_number());
        assert_eq!(c["project_id"], "76366029");
        assert_eq!(c["ref"], "main");
        assert_eq!(c["ref_path"], "refs/heads/main");
        assert_eq!(c["project_path"], "8gears/container-registry/harbor-workload-identity-federation");
        assert_eq!(c["namespace_path"], "8gears/container-registry");
        assert_eq!(
            c["sub"],
            "project_path:8gears/container-registry/harbor-workload-identity-federation:ref_type:branch:ref:main"
        );
        assert_eq!(
            c["ci_config_ref_uri"],
            "gitlab.com/8gears/container-registry/harbor-workload-identity-federation//.gitlab-ci.yml@refs/heads/main"
        );
        // The seed: iat 1764098080, nbf 1764098075, exp 1764101680.
        assert_eq!(c["nbf"], json!(1_764_098_075u64));
        assert_eq!(c["exp"], json!(1_764_101_680u64));
    }

    #[test]
    fn kubernetes_has_an_audience_array_and_the_nested_object() {
        let c = kubernetes("https://kubernetes.default.svc.cluster.local", &["macfly4200.8gears.ch"], 1_764_287_004);
        assert_eq!(c["aud"], json!(["macfly4200.8gears.ch"]));
        assert_eq!(c["sub"], "system:serviceaccount:default:default");
        let k = &c["kubernetes.io"];
        assert_eq!(k["namespace"], "default");
        assert_eq!(k["node"]["name"], "k3d-credential-provider-test-server-0");
        assert_eq!(k["node"]["uid"], "c922a6dd-d8af-4877-8a09-922898d7ddb5");
        assert_eq!(k["pod"], json!({"name": "httpd", "uid": "375b30f1-ef29-4477-b46a-aa80607b6cfc"}));
        assert_eq!(k["serviceaccount"]["name"], "default");
        assert_eq!(k["serviceaccount"]["uid"], "c871d5a5-d81d-4ce7-8c4b-2dd62dbde226");
        assert_eq!(c["exp"], json!(1_764_290_604u64));
        assert_eq!(c["nbf"], c["iat"]);
        let c = kubernetes_for("i", &["a", "b"], 0, "prod", "builder");
        assert_eq!(c["sub"], "system:serviceaccount:prod:builder");
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "builder");
        assert_eq!(c["aud"], json!(["a", "b"]));
    }

    #[test]
    fn forgejo_is_github_compatible() {
        let c = forgejo("https://code.example.com/api/actions", "registry.example.com", NOW);
        for claim in ["repository", "repository_owner", "ref", "ref_type", "sha", "actor", "workflow", "run_id", "event_name"] {
            assert!(c[claim].is_string(), "{claim}");
        }
        assert_eq!(c["sub"], "repo:container-registry/federated-idp-examples:ref:refs/heads/main");
        assert!(c.get("check_run_id").is_none());
        let c = forgejo_for("i", "a", NOW, "myorg/myrepo", "refs/heads/dev");
        assert_eq!(c["sub"], "repo:myorg/myrepo:ref:refs/heads/dev");
        assert_eq!((c["repository_owner"].as_str(), c["ref"].as_str()), (Some("myorg"), Some("refs/heads/dev")));
        assert!(c.get("actor_id").is_none() && c.get("repository_owner_id").is_none());
    }

    /// The seed payloads, verbatim from federated-idp-examples-README.md.
    const SEED_GITHUB: &str = r#"{
      "actor": "Vad1mo", "actor_id": "1492007", "aud": "macfly4200.8gears.ch", "base_ref": "",
      "check_run_id": "56363837828", "event_name": "workflow_dispatch", "exp": 1764090768, "head_ref": "",
      "iat": 1764090468, "iss": "https://token.actions.githubusercontent.com",
      "job_workflow_ref": "container-registry/federated-idp-examples/.github/workflows/example_1.yml@refs/heads/main",
      "job_workflow_sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56", "jti": "6cf8862b-b832-4372-9998-22026ecd21a1",
      "nbf": 1764090168, "ref": "refs/heads/main", "ref_protected": "false", "ref_type": "branch",
      "repository": "container-registry/federated-idp-examples", "repository_id": "1104004353",
      "repository_owner": "container-registry", "repository_owner_id": "46576199", "repository_visibility": "public",
      "run_attempt": "1", "run_id": "19677834613", "run_number": "4", "runner_environment": "github-hosted",
      "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56",
      "sub": "repo:container-registry/federated-idp-examples:ref:refs/heads/main",
      "workflow": "Create Image and Push Using federated IDP",
      "workflow_ref": "container-registry/federated-idp-examples/.github/workflows/example_1.yml@refs/heads/main",
      "workflow_sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56"
    }"#;
    const SEED_GITLAB: &str = r#"{
      "project_id": "76366029", "project_path": "8gears/container-registry/harbor-workload-identity-federation",
      "namespace_id": "1087575", "namespace_path": "8gears/container-registry", "user_id": "907142",
      "user_login": "vad1mo", "user_email": "vaba@gmail.com", "user_access_level": "owner",
      "pipeline_id": "2179265456", "pipeline_source": "push", "job_id": "12217223061", "ref": "main",
      "ref_type": "branch", "ref_path": "refs/heads/main", "ref_protected": "true", "runner_id": 47561171,
      "runner_environment": "self-hosted", "sha": "de7a8b6e3892321ac9d2305f26332dcdc775f1c2",
      "project_visibility": "public",
      "ci_config_ref_uri": "gitlab.com/8gears/container-registry/harbor-workload-identity-federation//.gitlab-ci.yml@refs/heads/main",
      "ci_config_sha": "de7a8b6e3892321ac9d2305f26332dcdc775f1c2", "jti": "aeb1491b-8988-49b5-ada0-2e372973b18e",
      "iat": 1764098080, "nbf": 1764098075, "exp": 1764101680, "iss": "https://gitlab.com",
      "sub": "project_path:8gears/container-registry/harbor-workload-identity-federation:ref_type:branch:ref:main",
      "aud": "macfly4200.8gears.ch"
    }"#;
    const SEED_KUBERNETES: &str = r#"{
      "aud": ["macfly4200.8gears.ch"], "exp": 1764290604, "iat": 1764287004,
      "iss": "https://kubernetes.default.svc.cluster.local", "jti": "a8c1d9f4-ded3-42b8-9377-402f6cc34f5e",
      "kubernetes.io": {
        "namespace": "default",
        "node": {"name": "k3d-credential-provider-test-server-0", "uid": "c922a6dd-d8af-4877-8a09-922898d7ddb5"},
        "pod": {"name": "httpd", "uid": "375b30f1-ef29-4477-b46a-aa80607b6cfc"},
        "serviceaccount": {"name": "default", "uid": "c871d5a5-d81d-4ce7-8c4b-2dd62dbde226"}
      },
      "nbf": 1764287004, "sub": "system:serviceaccount:default:default"
    }"#;

    #[test]
    fn builders_reproduce_the_seed_payloads_exactly() {
        for (seed, build) in [
            (SEED_GITHUB, (|i: &str, a: &Value, n| github(i, a.as_str().unwrap(), n)) as fn(&str, &Value, u64) -> Value),
            (SEED_GITLAB, |i, a, n| gitlab(i, a.as_str().unwrap(), n)),
            (SEED_KUBERNETES, |i, a, n| kubernetes(i, &[a[0].as_str().unwrap()], n)),
        ] {
            let seed: Value = serde_json::from_str(seed).unwrap();
            let built = build(seed["iss"].as_str().unwrap(), &seed["aud"], seed["iat"].as_u64().unwrap());
            let built = merge(built, json!({"jti": seed["jti"]}));
            assert_eq!(built, seed);
        }
    }

    #[test]
    fn jti_is_fresh_per_call() {
        assert_ne!(github("i", "a", NOW)["jti"], github("i", "a", NOW)["jti"]);
    }

    #[test]
    fn merge_is_rfc7386() {
        let base = json!({"a": "b", "c": {"d": "e", "f": "g"}, "n": [1]});
        let patch = json!({"a": "z", "c": {"f": null, "h": 1}, "n": [2, 3], "new": {"x": null, "y": true}});
        assert_eq!(merge(base, patch), json!({"a": "z", "c": {"d": "e", "h": 1}, "n": [2, 3], "new": {"y": true}}));
        assert_eq!(merge(json!({"a": 1}), json!("x")), json!("x"));
        let k = merge(kubernetes("i", &["a"], 0), json!({"kubernetes.io": {"namespace": "prod"}}));
        assert_eq!(k["kubernetes.io"]["namespace"], "prod");
        assert_eq!(k["kubernetes.io"]["pod"]["name"], "httpd");
    }
}
