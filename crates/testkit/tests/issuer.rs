//! The test issuer over real sockets: discovery and JWKS for every flavour, HTTPS trusting only its
//! CA, tokens of every key kind verified by jsonwebtoken against the served JWKS, rotation,
//! outages, counters, delays and the knobs for negative tests.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_testkit::{claims, Flavor, IssuerOptions, KeyKind, TestIssuer};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const AUD: &str = "registry.example.com";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// Verifies `token` the way a relying party does: discovery, then the JWKS it names, then the
/// key of the header's kid; returns the claims.
async fn verify(client: &reqwest::Client, issuer: &str, token: &str) -> Result<Value, String> {
    let discovery = get_json(client, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer);
    let jwks: JwkSet = serde_json::from_value(get_json(client, discovery["jwks_uri"].as_str().unwrap()).await).unwrap();
    let header = decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.clone().ok_or("no kid")?;
    let jwk: &Jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[AUD]);
    decode::<Value>(token, &key, &validation).map(|d| d.claims).map_err(|e| e.to_string())
}

#[tokio::test]
async fn discovery_and_jwks_of_every_flavour() {
    let client = client();
    for flavor in Flavor::ALL {
        let iss = TestIssuer::start(IssuerOptions::new(flavor)).await;
        assert!(iss.issuer().starts_with("http://127.0.0.1:"));
        let d = get_json(&client, &iss.discovery_url()).await;
        let expected_jwks = format!("{}{}", iss.issuer(), flavor.jwks_path());
        assert_eq!(
            d,
            json!({
                "issuer": iss.issuer(),
                "jwks_uri": expected_jwks,
                "id_token_signing_alg_values_supported": [flavor.default_key().alg()],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
            }),
            "{flavor}"
        );
        let jwks = get_json(&client, &expected_jwks).await;
        assert_eq!(jwks.to_string(), iss.jwks_json());
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kid"], iss.signing_kid());
        assert_eq!(k["use"], "sig");
        assert_eq!(k["alg"], flavor.default_key().alg());
        match flavor.default_key() {
            KeyKind::EcP256 => assert!(k["kty"] == "EC" && k["crv"] == "P-256" && k["x"].is_string() && k["y"].is_string()),
            _ => assert!(k["kty"] == "RSA" && k["n"].is_string() && k["e"] == "AQAB"),
        }
        // Nothing else is served.
        let other = client.get(format!("{}/nope", iss.issuer())).send().await.unwrap();
        assert_eq!(other.status(), 404);
        iss.shutdown().await;
    }
}

#[tokio::test]
async fn flavour_details_github_x5t_kubernetes_kid_and_aud_array() {
    let client = client();
    let gh = TestIssuer::start(IssuerOptions::new(Flavor::GitHub)).await;
    let token = gh.mint(gh.claims(AUD));
    let header: Value = {
        use base64::Engine as _;
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
    };
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"].as_str().unwrap().len(), 36, "GitHub kids are UUID-shaped");
    let jwks: Value = serde_json::from_str(&gh.jwks_json()).unwrap();
    assert_eq!(header["x5t"], jwks["keys"][0]["x5t"]);
    assert!(jwks["keys"][0]["x5c"][0].is_string());
    let c = verify(&client, &gh.issuer(), &token).await.unwrap();
    assert_eq!(c["repository"], "container-registry/federated-idp-examples");

    let k8s = TestIssuer::start(IssuerOptions::new(Flavor::Kubernetes)).await;
    assert!(k8s.jwks_uri().ends_with("/openid/v1/jwks"));
    assert_eq!(k8s.signing_kid(), k8s.signing_key().spki_sha256());
    let c = verify(&client, &k8s.issuer(), &k8s.mint(k8s.claims(AUD))).await.unwrap();
    assert_eq!(c["aud"], json!([AUD]));
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "default");

    let gl = TestIssuer::start(IssuerOptions::new(Flavor::GitLab)).await;
    assert_eq!(gl.signing_kid(), gl.signing_key().thumbprint());
    let c = verify(&client, &gl.issuer(), &gl.mint(gl.claims(AUD))).await.unwrap();
    assert_eq!(c["runner_id"], 47561171);
}

#[tokio::test]
async fn issuer_with_a_path_like_forgejo() {
    let client = client();
    let iss = TestIssuer::start(IssuerOptions::new(Flavor::Forgejo).path("api/actions/")).await;
    assert!(iss.issuer().ends_with("/api/actions"));
    assert_eq!(iss.jwks_uri(), format!("{}/.well-known/jwks", iss.issuer()));
    let c = verify(&client, &iss.issuer(), &iss.mint(iss.claims(AUD))).await.unwrap();
    assert_eq!(c["iss"], iss.issuer());
    assert_eq!(c["sub"], "repo:container-registry/federated-idp-examples:ref:refs/heads/main");
    // Discovery lives under the path only.
    let root = format!("http://{}/.well-known/openid-configuration", iss.addr());
    assert_eq!(client.get(root).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn every_key_kind_verifies_against_the_served_jwks() {
    let client = client();
    for kind in KeyKind::ALL {
        let iss = TestIssuer::start(IssuerOptions::default().key(kind)).await;
        let token = iss.mint(iss.claims(AUD));
        assert_eq!(format!("{:?}", decode_header(&token).unwrap().alg), kind.alg());
        let c = verify(&client, &iss.issuer(), &token).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(c["sub"], "test-subject");
        let d = get_json(&client, &iss.discovery_url()).await;
        assert_eq!(d["id_token_signing_alg_values_supported"], json!([kind.alg()]));
    }
}

#[tokio::test]
async fn rsa_pss_and_other_rsa_algorithms_verify() {
    let iss = TestIssuer::start(IssuerOptions::default().key(KeyKind::Rsa2048)).await;
    let jwk: Jwk = serde_json::from_value(serde_json::from_str::<Value>(&iss.jwks_json()).unwrap()["keys"][0].clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    for (name, alg) in [("RS384", Algorithm::RS384), ("RS512", Algorithm::RS512), ("PS256", Algorithm::PS256), ("PS512", Algorithm::PS512)] {
        let token = iss.mint_with(&iss.signing_kid(), name, Value::Null, iss.claims(AUD));
        let mut v = Validation::new(alg);
        v.set_audience(&[AUD]);
        decode::<Value>(&token, &key, &v).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn https_trusts_only_its_own_ca() {
    let iss = TestIssuer::start_https(IssuerOptions::new(Flavor::GitLab)).await;
    assert!(iss.issuer().starts_with("https://127.0.0.1:"));
    let ca = iss.ca_pem().unwrap();
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let token = iss.mint(iss.claims(AUD));
    let c = verify(&trusting, &iss.issuer(), &token).await.unwrap();
    assert_eq!(c["project_path"], "8gears/container-registry/harbor-workload-identity-federation");
    // localhost is in the certificate too.
    let via_name = format!("https://localhost:{}/.well-known/openid-configuration", iss.addr().port());
    assert_eq!(trusting.get(via_name).send().await.unwrap().status(), 200);

    // Without the CA the handshake fails.
    let untrusting = reqwest::Client::builder().tls_built_in_root_certs(false).build().unwrap();
    let err = untrusting.get(iss.discovery_url()).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let default = reqwest::Client::new();
    assert!(default.get(iss.discovery_url()).send().await.is_err());
    // Another issuer's CA is not this one.
    let other = TestIssuer::start_https(IssuerOptions::default()).await;
    assert_ne!(other.ca_pem().unwrap(), ca);
    assert!(trusting.get(other.discovery_url()).send().await.is_err());
    assert!(iss.ca_pem().is_some() && TestIssuer::start(IssuerOptions::default()).await.ca_pem().is_none());
}

#[tokio::test]
async fn rotation_changes_the_kid_and_the_jwks() {
    let client = client();
    let iss = TestIssuer::start(IssuerOptions::default()).await;
    let old_kid = iss.signing_kid();
    let old_token = iss.mint(iss.claims(AUD));
    verify(&client, &iss.issuer(), &old_token).await.unwrap();

    let new_kid = iss.rotate(KeyKind::Ed25519);
    assert_ne!(new_kid, old_kid);
    assert_eq!(iss.signing_kid(), new_kid);
    assert_eq!(iss.published_kids(), vec![new_kid.clone()]);
    let d = get_json(&client, &iss.discovery_url()).await;
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
    let new_token = iss.mint(iss.claims(AUD));
    assert_eq!(decode_header(&new_token).unwrap().kid.unwrap(), new_kid);
    verify(&client, &iss.issuer(), &new_token).await.unwrap();
    let err = verify(&client, &iss.issuer(), &old_token).await.unwrap_err();
    assert!(err.contains("not in the JWKS"), "{err}");
    // The retired key still signs on request, for negative tests.
    let retired = iss.mint_with(&old_kid, "ES256", Value::Null, iss.claims(AUD));
    assert!(verify(&client, &iss.issuer(), &retired).await.is_err());

    // Rotation keeping the old key: add, then switch.
    let third = iss.add_key(KeyKind::EcP384);
    assert_eq!(iss.signing_kid(), new_kid, "add_key does not change the signing key");
    iss.set_signing_key(&third);
    assert_eq!(iss.published_kids(), vec![new_kid.clone(), third.clone()]);
    verify(&client, &iss.issuer(), &new_token).await.unwrap();
    verify(&client, &iss.issuer(), &iss.mint(iss.claims(AUD))).await.unwrap();
    let d = get_json(&client, &iss.discovery_url()).await;
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["EdDSA", "ES384"]));

    iss.remove_key(&new_kid);
    assert_eq!(iss.published_kids(), vec![third.clone()]);
    assert!(verify(&client, &iss.issuer(), &new_token).await.is_err());
    iss.publish_key(&new_kid);
    verify(&client, &iss.issuer(), &new_token).await.unwrap();
}

#[tokio::test]
async fn down_answers_503_and_refusing_closes_the_port() {
    let client = client();
    let iss = TestIssuer::start(IssuerOptions::default()).await;
    get_json(&client, &iss.jwks_uri()).await;
    iss.set_down(true);
    assert_eq!(client.get(iss.discovery_url()).send().await.unwrap().status(), 503);
    assert_eq!(client.get(iss.jwks_uri()).send().await.unwrap().status(), 503);
    assert_eq!(iss.fetch_count(), (1, 2), "requests while down are counted");
    iss.set_down(false);
    get_json(&client, &iss.discovery_url()).await;

    // The pooled keep-alive connection is cut too, not only new ones refused.
    iss.set_refusing(true).await;
    let err = client.get(iss.discovery_url()).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let fresh = reqwest::Client::new();
    assert!(fresh.get(iss.jwks_uri()).send().await.unwrap_err().is_connect());
    iss.set_refusing(false).await;
    get_json(&client, &iss.discovery_url()).await;
    get_json(&fresh, &iss.jwks_uri()).await;

    let url = iss.discovery_url();
    iss.shutdown().await;
    assert!(reqwest::Client::new().get(url).send().await.unwrap_err().is_connect());
}

#[tokio::test]
async fn counters_and_delays() {
    let client = client();
    let iss = TestIssuer::start(IssuerOptions::default()).await;
    assert_eq!(iss.fetch_count(), (0, 0));
    for _ in 0..3 {
        get_json(&client, &iss.discovery_url()).await;
    }
    get_json(&client, &iss.jwks_uri()).await;
    assert_eq!(iss.fetch_count(), (3, 1));
    iss.reset_counts();
    assert_eq!(iss.fetch_count(), (0, 0));

    iss.set_jwks_delay(Duration::from_millis(1500));
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let err = impatient.get(iss.jwks_uri()).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let start = std::time::Instant::now();
    get_json(&client, &iss.jwks_uri()).await;
    assert!(start.elapsed() >= Duration::from_millis(1500));
    // Discovery is not delayed by the JWKS delay.
    get_json(&impatient, &iss.discovery_url()).await;
    iss.set_jwks_delay(Duration::ZERO);
    iss.set_discovery_delay(Duration::from_millis(1500));
    assert!(impatient.get(iss.discovery_url()).send().await.unwrap_err().is_timeout());
    get_json(&impatient, &iss.jwks_uri()).await;
    assert_eq!(iss.fetch_count(), (2, 3));
}

#[tokio::test]
async fn broken_documents_and_odd_tokens_for_negative_tests() {
    let client = client();
    let iss = TestIssuer::start(IssuerOptions::default()).await;
    iss.set_jwks_body(Some("{not json".into()));
    assert_eq!(client.get(iss.jwks_uri()).send().await.unwrap().text().await.unwrap(), "{not json");
    iss.set_jwks_body(None);
    iss.set_discovery_patch(Some(json!({"issuer": "https://evil.example", "response_types_supported": null})));
    let d = get_json(&client, &iss.discovery_url()).await;
    assert_eq!(d["issuer"], "https://evil.example");
    assert!(d.get("response_types_supported").is_none());
    iss.set_discovery_patch(None);

    let kid = iss.signing_kid();
    let claims = iss.claims(AUD);
    // alg none: empty signature.
    let none = iss.mint_with(&kid, "none", Value::Null, claims.clone());
    assert!(none.ends_with('.'));
    // Header override: unknown kid, no kid, extra members.
    let unknown = iss.mint_with(&kid, "ES256", json!({"kid": "unknown", "jku": "https://evil.example/jwks"}), claims.clone());
    let h = decode_header(&unknown).unwrap();
    assert_eq!((h.kid.as_deref(), h.jku.as_deref()), (Some("unknown"), Some("https://evil.example/jwks")));
    let err = verify(&client, &iss.issuer(), &unknown).await.unwrap_err();
    assert!(err.contains("not in the JWKS"));
    let no_kid = iss.mint_with(&kid, "ES256", json!({"kid": null}), claims.clone());
    assert!(decode_header(&no_kid).unwrap().kid.is_none());
    // HS256 keyed with the public key (algorithm confusion) verifies as HMAC with that PEM.
    let hs = iss.mint_with(&kid, "HS256", Value::Null, claims.clone());
    let pem = iss.signing_key().public_key_pem();
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[AUD]);
    decode::<Value>(&hs, &DecodingKey::from_secret(pem.as_bytes()), &v).unwrap();
    // A lying header: RS256 claimed, ES256 signature.
    let lying = iss.mint_with(&kid, "RS256", Value::Null, claims.clone());
    assert_eq!(decode_header(&lying).unwrap().alg, Algorithm::RS256);
    assert!(verify(&client, &iss.issuer(), &lying).await.is_err());
    // Expired, by merging claims.
    let expired = iss.mint(claims::merge(claims, json!({"exp": claims::now() - 3600})));
    assert!(verify(&client, &iss.issuer(), &expired).await.unwrap_err().contains("Expired"));
}

#[tokio::test]
async fn a_fixed_port_and_a_caller_made_key() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let iss = TestIssuer::start(IssuerOptions::default().port(port)).await;
    assert_eq!(iss.issuer(), format!("http://127.0.0.1:{port}"));
    // Two keys under one kid: a relying party must not mix them up.
    let twin = berth_testkit::Key::generate(KeyKind::EcP256).with_kid(iss.signing_kid());
    assert_eq!(iss.insert_key(twin), iss.signing_kid());
    let jwks: Value = serde_json::from_str(&iss.jwks_json()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(jwks["keys"][0]["kid"], jwks["keys"][1]["kid"]);
}
