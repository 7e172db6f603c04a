//! Benchmark helper: makes an RSA-2048 identity provider and GitHub-shaped RS256 tokens.
//!
//! `cargo run --release -p berth-identity --example mint_tokens -- DIR ISSUER AUDIENCE ROBOTS TOKENS`
//! writes `DIR/berth.json` (an apply document: project `p`, a provider with static keys, ROBOTS
//! robots each bound to repository `org/repo-<i>`) and `DIR/tokens.txt` (TOKENS lines, each the
//! base64 of `jwt:<token>` for a Basic header, cycling through the robots' repositories).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine as _;
use serde_json::json;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, issuer, aud, robots, tokens] = args.as_slice() else {
        return Err("usage: mint_tokens DIR ISSUER AUDIENCE ROBOTS TOKENS".into());
    };
    let (robots, tokens): (usize, usize) = (robots.parse()?, tokens.parse()?);
    let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
    let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig", "n": b64(&c.n), "e": b64(&c.e)}]});
    let robot_list: Vec<_> = (0..robots)
        .map(|i| json!({"name": format!("r{i}"), "project": "p", "identityProvider": "bench",
            "rules": [{"claim": "repository", "equals": format!("org/repo-{i}")}, {"claim": "ref", "glob": "refs/heads/*"}],
            "permissions": [{"repositories": "*", "actions": ["pull", "push"]}]}))
        .collect();
    let doc = json!({"projects": [{"name": "p"}], "identityProviders": [{"name": "bench", "issuer": issuer, "audiences": [aud], "jwks": jwks}], "robots": robot_list});
    std::fs::write(format!("{dir}/berth.json"), doc.to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let header = b64(br#"{"alg":"RS256","kid":"bench","typ":"JWT"}"#);
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(tokens * 1100);
    for t in 0..tokens {
        let repo = format!("org/repo-{}", t % robots.max(1));
        let claims = json!({"iss": issuer, "aud": aud, "exp": now + 3000, "iat": now, "nbf": now - 5, "jti": format!("bench-{t}"),
            "repository": repo, "ref": "refs/heads/main", "sub": format!("repo:{repo}:ref:refs/heads/main"), "actor": "bench",
            "workflow": "bench", "run_id": t.to_string(), "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56"});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).map_err(|e| e.to_string())?;
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(format!("jwt:{input}.{}", b64(&sig))));
        out.push('\n');
    }
    std::fs::write(format!("{dir}/tokens.txt"), out)?;
    Ok(())
}
