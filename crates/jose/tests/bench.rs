//! Cost of a federated verification against a bare aws-lc-rs RS256 verification, with a realistic
//! GitHub Actions token and a 2048-bit key. Ignored by default (timing, not correctness):
//!
//! ```text
//! cargo test -p berth-jose --test bench -- --ignored --nocapture
//! # with this crate optimized like its dependencies already are in the dev profile:
//! cargo test -p berth-jose --test bench --config 'profile.dev.package.berth-jose.opt-level=2' -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use berth_jose::claims::{validate, Policy};
use berth_jose::{decode, parse_claims, parse_jwk_set, verify, Algorithm, Limits};
use common::Issuer;
use serde_json::json;

/// The claims GitHub Actions puts in an ID token (values from a real token's shape).
fn github_claims(now: u64) -> String {
    json!({
        "jti": "5f8a0e4c-3b8e-4f0b-9d3a-2f1c7e6b9a10",
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "aud": "registry.example.com",
        "ref": "refs/heads/main",
        "sha": "d6f8a1b2c3d4e5f60718293a4b5c6d7e8f901234",
        "repository": "octo-org/octo-repo",
        "repository_owner": "octo-org",
        "repository_owner_id": "123456",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "repository_visibility": "private",
        "repository_id": "654321",
        "actor_id": "111111",
        "actor": "octocat",
        "workflow": "Build and push",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_protected": "true",
        "ref_type": "branch",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/build.yml@refs/heads/main",
        "workflow_sha": "d6f8a1b2c3d4e5f60718293a4b5c6d7e8f901234",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/build.yml@refs/heads/main",
        "job_workflow_sha": "d6f8a1b2c3d4e5f60718293a4b5c6d7e8f901234",
        "runner_environment": "github-hosted",
        "enterprise": "octo-enterprise",
        "enterprise_id": "2000",
        "iss": "https://token.actions.githubusercontent.com",
        "nbf": now - 5,
        "exp": now + 300,
        "iat": now - 5
    })
    .to_string()
}

/// A named closure to time.
type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// Runs every case `iters` times per round, the cases interleaved round by round so that load
/// from other processes hits them alike; returns (minimum, median) time per call for each.
fn time_all(rounds: usize, iters: u32, cases: &mut [Case<'_>]) -> Vec<(Duration, Duration)> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..=rounds {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            if round > 0 {
                samples[i].push(t.elapsed() / iters);
            }
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            (s[0], s[s.len() / 2])
        })
        .collect()
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn federated_verification_vs_bare_rs256() {
    let now = 1_795_514_400;
    let issuer = Issuer::rsa();
    let (n, e) = issuer.rsa_components();
    let header = r#"{"typ":"JWT","alg":"RS256","x5t":"PYjWp4ks3x1hE2XbXOxHsXiZ5bM","kid":"38826b17-6a30-5f9b-b169-8beb8202f723"}"#;
    let token = issuer.sign(Algorithm::RS256, header, &github_claims(now));
    let jwks = issuer.jwks("38826b17-6a30-5f9b-b169-8beb8202f723");
    let set = parse_jwk_set(jwks.as_bytes()).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = berth_jose::b64url_decode("signature", sig).unwrap();
    let limits = Limits::default();
    let auds = vec!["registry.example.com".to_owned()];
    let policy = Policy::new("https://token.actions.githubusercontent.com", &auds, now);

    let components = RsaPublicKeyComponents { n: &n[..], e: &e[..] };
    let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, set.keys[0].public_key()).unwrap();
    assert!(components.verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig).is_ok());

    let payload = decode(&token, &limits).unwrap().payload;
    let (rounds, iters) = (30, 100);
    let mut cases: Vec<Case> = vec![
        ("bare RsaPublicKeyComponents::verify", Box::new(|| {
            black_box(components.verify(&RSA_PKCS1_2048_8192_SHA256, black_box(input.as_bytes()), black_box(&sig)).is_ok());
        })),
        ("bare ParsedPublicKey::verify_sig (key parsed once)", Box::new(|| {
            black_box(parsed.verify_sig(black_box(input.as_bytes()), black_box(&sig)).is_ok());
        })),
        ("decode + verify + parse_claims", Box::new(|| {
            let u = decode(black_box(&token), &limits).unwrap();
            let v = verify(&u, &set, &[Algorithm::RS256]).unwrap();
            black_box(parse_claims(&v.payload).unwrap());
        })),
        ("  ... + claims::validate", Box::new(|| {
            let u = decode(black_box(&token), &limits).unwrap();
            let v = verify(&u, &set, &[Algorithm::RS256]).unwrap();
            let claims = parse_claims(&v.payload).unwrap();
            black_box(validate(&claims, &policy).unwrap());
        })),
        ("  decode alone", Box::new(|| {
            black_box(decode(black_box(&token), &limits).unwrap());
        })),
        ("  parse_claims alone", Box::new(|| {
            black_box(parse_claims(black_box(&payload)).unwrap());
        })),
        ("parse_jwk_set + decode + verify (key not cached)", Box::new(|| {
            let set = parse_jwk_set(black_box(jwks.as_bytes())).unwrap();
            let u = decode(black_box(&token), &limits).unwrap();
            black_box(verify(&u, &set, &[Algorithm::RS256]).unwrap());
        })),
    ];
    let times = time_all(rounds, iters, &mut cases);
    println!("token: {} bytes (payload {} bytes), RSA 2048; {rounds} rounds of {iters} calls; ratio = min / min of bare", token.len(), payload.len());
    println!("{:<52} {:>10} {:>10} {:>7}", "", "min", "median", "ratio");
    let base = times[0].0;
    for ((name, _), (min, median)) in cases.iter().zip(&times) {
        println!("{name:<52} {:>10} {:>10} {:>7.2}", format!("{min:.2?}"), format!("{median:.2?}"), min.as_secs_f64() / base.as_secs_f64());
    }
}
