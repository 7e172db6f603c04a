//! In-process cost of accepting a federated token: strict decode + RS256 verification + claims
//! parsing + standard claims validation + matching against 10,000 robots of the provider,
//! compared with a bare RS256 signature verification with the same crypto library (aws-lc-rs).
//!
//! `cargo bench -p berth-identity --bench federation` prints medians of 15 rounds.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use base64::Engine as _;
use berth_claims::{Matcher, RobotRules, Rule, RuleSpec};
use berth_jose::claims::{validate, Policy};
use berth_jose::{decode, parse_claims, parse_jwk_set, verify, Algorithm, Limits};
use serde_json::json;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_per_op(iters: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let public = key.public_key();
    let (n, e) = {
        let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(public);
        (c.n, c.e)
    };
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(&n), "e": b64(&e)}]}).to_string();
    let set = parse_jwk_set(jwks.as_bytes()).expect("jwks");
    let now = 1_764_090_468u64;
    let claims = json!({
        "actor": "Vad1mo", "actor_id": "1492007", "aud": "registry.example.com", "base_ref": "", "check_run_id": "56363837828",
        "event_name": "workflow_dispatch", "exp": now + 300, "head_ref": "", "iat": now, "iss": "https://token.actions.githubusercontent.com",
        "job_workflow_ref": "org/repo-4242/.github/workflows/example_1.yml@refs/heads/main", "jti": "6cf8862b-b832-4372-9998-22026ecd21a1",
        "nbf": now - 300, "ref": "refs/heads/main", "ref_protected": "false", "ref_type": "branch", "repository": "org/repo-4242",
        "repository_id": "1104004353", "repository_owner": "org", "repository_owner_id": "46576199", "repository_visibility": "public",
        "run_attempt": "1", "run_id": "19677834613", "run_number": "4", "runner_environment": "github-hosted",
        "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56", "sub": "repo:org/repo-4242:ref:refs/heads/main", "workflow": "build",
        "workflow_ref": "org/repo-4242/.github/workflows/example_1.yml@refs/heads/main", "workflow_sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56"
    });
    let input = format!("{}.{}", b64(br#"{"alg":"RS256","kid":"k1","typ":"JWT","x5t":"ykNaY4qM_ta4k2TgZOCEYLkcYlA"}"#), b64(claims.to_string().as_bytes()));
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
    let token = format!("{input}.{}", b64(&sig));

    let robots: Vec<RobotRules> = (0..10_000)
        .map(|i| RobotRules {
            robot: format!("robot$p+r{i}"),
            rules: vec![
                Rule::compile(&RuleSpec { claim: Some("repository".into()), equals: Some(format!("org/repo-{i}")), ..Default::default() }).expect("rule"),
                Rule::compile(&RuleSpec { claim: Some("ref".into()), glob: Some("refs/heads/*".into()), ..Default::default() }).expect("rule"),
            ],
        })
        .collect();
    let matcher = Matcher::new(robots);
    let audiences = vec!["registry.example.com".to_owned()];
    let policy = Policy {
        issuer: "https://token.actions.githubusercontent.com",
        audiences: &audiences,
        max_lifetime: Duration::from_secs(86_400),
        clock_skew: Duration::from_secs(60),
        now,
    };
    let limits = Limits::default();
    let bare_key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.as_ref().to_vec());

    let full = || {
        let u = decode(&token, &limits).expect("decode");
        let v = verify(&u, &set, &[Algorithm::RS256]).expect("verify");
        let c = parse_claims(&v.payload).expect("claims");
        validate(&c, &policy).expect("valid");
        let m = matcher.matches(&c);
        assert_eq!(m, vec!["robot$p+r4242".to_owned()]);
    };
    let bare = || {
        bare_key.verify(input.as_bytes(), &sig).expect("bare verify");
    };
    full();
    let (mut b, mut f, mut mo) = (vec![], vec![], vec![]);
    let claims_map = claims.as_object().expect("object").clone();
    for _ in 0..15 {
        b.push(time_per_op(300, bare));
        f.push(time_per_op(300, full));
        mo.push(time_per_op(3000, || {
            std::hint::black_box(matcher.matches(&claims_map));
        }));
    }
    let (b, f, mo) = (median(b), median(f), median(mo));
    println!("bare RS256 verification (aws-lc-rs, 2048-bit):            {:>9.1} µs", b / 1000.0);
    println!("decode + verify + claims + validate + match (10,000 robots): {:>9.1} µs", f / 1000.0);
    println!("  of which matching against 10,000 robots:                    {:>9.2} µs", mo / 1000.0);
    println!("ratio full / bare: {:.2}x (goal <= 2x)", f / b);
}
