//! The OpenID test provider alone (no Berth): `scripts/oidc/provider.mjs` (panva's
//! oidc-provider) driven by `support::oidc`, in both shapes. Proves what Berth's tests of human
//! login rely on: discovery, dynamic registration, the authorization code flow with PKCE through
//! a browser without JavaScript, the ID token's claims, refused logins, the device flow, refresh
//! tokens (rotated), groups changing between refreshes, and disabled users.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::Value;
use support::block_on;
use support::oidc::{jwt_claims, pkce, query_params, random_token, Client, OidcProvider, Shape};

const SHAPES: [Shape; 2] = [Shape::Keycloak, Shape::Authentik];

/// A redirect URI like Berth's; nothing listens there (the browser never requests it).
fn redirect_uri() -> String {
    "http://127.0.0.1:9/auth/oidc/callback".to_owned()
}

/// POSTs a form to the token endpoint with HTTP Basic client authentication: (status, JSON).
fn token_request(op: &OidcProvider, client: &Client, form: Vec<(&str, String)>) -> (u16, Value) {
    let url = op.endpoint("token_endpoint");
    let (id, secret) = (client.id.clone(), client.secret.clone());
    let form: Vec<(String, String)> = form.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    block_on(async move {
        let r = reqwest::Client::new().post(&url).basic_auth(id, Some(secret)).form(&form).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap();
        (status, body)
    })
}

fn refresh(op: &OidcProvider, client: &Client, refresh_token: &str) -> (u16, Value) {
    token_request(op, client, vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh_token.into())])
}

/// The authorization URL Berth would redirect the browser to, with the PKCE verifier.
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn auth_request(op: &OidcProvider, client: &Client, scope: &str) -> AuthRequest {
    let (verifier, challenge) = pkce();
    let (state, nonce) = (random_token(), random_token());
    let mut url = reqwest::Url::parse(&op.endpoint("authorization_endpoint")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.id)
        .append_pair("redirect_uri", &redirect_uri())
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    AuthRequest { url: url.to_string(), state, nonce, verifier }
}

/// Logs `user` in through the browser and exchanges the code: the token response.
fn code_flow(op: &OidcProvider, client: &Client, scope: &str, user: &str, password: &str) -> (AuthRequest, Value) {
    let req = auth_request(op, client, scope);
    let back = op.browser_login(&req.url, user, password);
    assert!(back.starts_with(&format!("{}?", redirect_uri())), "{back}");
    let q = query_params(&back);
    assert_eq!(q.get("state"), Some(&req.state), "{back}");
    // RFC 9207: the authorization response names the issuer, exactly as `iss`.
    assert_eq!(q.get("iss").map(String::as_str), Some(op.issuer()), "{back}");
    let code = q.get("code").unwrap_or_else(|| panic!("no code in {back}")).clone();
    let (status, tokens) = token_request(
        op,
        client,
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", redirect_uri()),
            ("code_verifier", req.verifier.clone()),
        ],
    );
    assert_eq!(status, 200, "{tokens}");
    (req, tokens)
}

fn groups(claims: &Value) -> Vec<String> {
    claims["groups"].as_array().unwrap_or_else(|| panic!("no groups array in {claims}")).iter().map(|g| g.as_str().unwrap().to_owned()).collect()
}

#[test]
fn discovery_shows_the_endpoints_in_both_shapes() {
    for shape in SHAPES {
        let op = OidcProvider::start(shape);
        let d = op.discovery();
        assert_eq!(d["issuer"].as_str(), Some(op.issuer()));
        match shape {
            Shape::Keycloak => {
                assert_eq!(op.issuer(), format!("{}/realms/acme", op.base()));
                assert_eq!(d["authorization_endpoint"], format!("{}/protocol/openid-connect/auth", op.issuer()));
            }
            Shape::Authentik => {
                assert_eq!(op.issuer(), format!("{}/application/o/berth/", op.base()));
                assert_eq!(d["authorization_endpoint"], format!("{}/application/o/authorize/", op.base()));
            }
        }
        for name in [
            "authorization_endpoint",
            "token_endpoint",
            "device_authorization_endpoint",
            "end_session_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "registration_endpoint",
            "revocation_endpoint",
        ] {
            let url = d[name].as_str().unwrap_or_else(|| panic!("{shape:?}: no {name} in {d}"));
            assert!(url.starts_with(op.base()), "{shape:?}: {name} = {url}");
        }
        for grant in ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"] {
            assert!(d["grant_types_supported"].as_array().unwrap().iter().any(|g| g == grant), "{shape:?}: {grant}: {d}");
        }
        assert!(d["code_challenge_methods_supported"].as_array().unwrap().iter().any(|m| m == "S256"));
        let jwks_uri = d["jwks_uri"].as_str().unwrap().to_owned();
        let jwks: Value = block_on(async move { reqwest::get(&jwks_uri).await.unwrap().json().await.unwrap() });
        assert_eq!(jwks["keys"][0]["kty"], "RSA", "{jwks}");
        assert!(jwks["keys"][0].get("d").is_none(), "the JWKS shows a private key: {jwks}");
    }
}

#[test]
fn code_flow_with_pkce_gives_the_shapes_claims_in_the_id_token() {
    for shape in SHAPES {
        let op = OidcProvider::start(shape);
        let client = op.register_client(&[redirect_uri()]);
        assert!(!client.secret.is_empty());
        let (req, tokens) = code_flow(&op, &client, "openid profile email offline_access", "alice", "alice-pw");
        assert!(tokens["access_token"].is_string(), "{tokens}");
        assert!(tokens["refresh_token"].is_string(), "offline_access asked without prompt=consent: {tokens}");
        let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
        eprintln!("{shape:?} ID token claims: {claims:#}");
        assert_eq!(claims["iss"].as_str(), Some(op.issuer()));
        assert_eq!(claims["aud"].as_str(), Some(client.id.as_str()), "{claims}");
        assert_eq!(claims["nonce"].as_str(), Some(req.nonce.as_str()));
        assert!(claims["at_hash"].is_string(), "{claims}");
        let sub = claims["sub"].as_str().unwrap();
        assert_ne!(sub, "alice");
        assert_eq!(sub, op.user("alice")["sub"].as_str().unwrap());
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["name"], "Alice Demo");
        assert_eq!(groups(&claims), vec![shape.group("team-demo")]);
        match shape {
            Shape::Keycloak => {
                assert_eq!(groups(&claims), vec!["/team-demo"]);
                assert_eq!(claims["email_verified"], true);
            }
            Shape::Authentik => assert_eq!(groups(&claims), vec!["team-demo"]),
        }

        // without offline_access: no refresh token; only the scope `groups`: groups, no email
        let (_, tokens) = code_flow(&op, &client, "openid groups", "dave", "dave-pw");
        assert!(tokens.get("refresh_token").is_none(), "{tokens}");
        let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(claims["groups"], serde_json::json!([]), "dave has no groups: {claims}");
        assert!(claims.get("email").is_none(), "{claims}");
        assert!(claims.get("preferred_username").is_none(), "{claims}");

        // the other users' groups
        for (user, group) in [("bob", "team-other"), ("carol", "registry-admins")] {
            let (_, tokens) = code_flow(&op, &client, "openid profile", user, &format!("{user}-pw"));
            let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
            assert_eq!(groups(&claims), vec![shape.group(group)], "{user}");
            assert_eq!(claims["preferred_username"], user);
        }
    }
}

#[test]
fn a_browser_session_is_single_sign_on_until_logout() {
    let op = OidcProvider::start(Shape::Keycloak);
    let client = op.register_client(&[redirect_uri()]);
    let mut browser = op.browser();
    let first = auth_request(&op, &client, "openid profile");
    let back = browser.login(&first.url, "bob", "bob-pw").unwrap();
    assert!(query_params(&back).contains_key("code"), "{back}");
    // the second authorization needs no password
    let second = auth_request(&op, &client, "openid profile");
    let back = browser.authorize(&second.url).unwrap();
    assert_eq!(query_params(&back).get("state"), Some(&second.state));
    // RP-initiated logout ends the session: the next authorization shows the login form
    let mut logout = reqwest::Url::parse(&op.endpoint("end_session_endpoint")).unwrap();
    logout.query_pairs_mut().append_pair("client_id", &client.id).append_pair("post_logout_redirect_uri", "http://127.0.0.1:9/");
    let after = browser.logout(logout.as_str()).unwrap();
    assert_eq!(after.as_deref().map(|u| u.starts_with("http://127.0.0.1:9/")), Some(true), "{after:?}");
    let third = auth_request(&op, &client, "openid profile");
    let page = browser.authorize(&third.url).unwrap_err();
    assert!(page.contains("Sign in"), "{page}");
    // cancelling the login sends the person back with access_denied
    let back = browser.cancel_login(&third.url).unwrap();
    assert_eq!(query_params(&back).get("error").map(String::as_str), Some("access_denied"), "{back}");
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused() {
    for shape in SHAPES {
        let op = OidcProvider::start(shape);
        let client = op.register_client(&[redirect_uri()]);
        for (user, password) in [("alice", "bob-pw"), ("alice", ""), ("mallory", "mallory-pw")] {
            let req = auth_request(&op, &client, "openid profile");
            let page = op.try_browser_login(&req.url, user, password).unwrap_err();
            assert!(page.contains("Invalid username or password."), "{shape:?} {user}: {page}");
        }
        // a client that did not register the redirect URI gets the provider's error page
        let mut req = reqwest::Url::parse(&auth_request(&op, &client, "openid").url).unwrap();
        let pairs: Vec<(String, String)> = req
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "redirect_uri" { "http://127.0.0.1:9/elsewhere".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        req.query_pairs_mut().clear().extend_pairs(pairs);
        let page = op.try_browser_login(req.as_str(), "alice", "alice-pw").unwrap_err();
        assert!(page.contains("redirect_uri"), "{page}");
    }
}

/// Starts the device flow: the device authorization response.
fn device_start(op: &OidcProvider, client: &Client, scope: &str) -> Value {
    let url = op.endpoint("device_authorization_endpoint");
    let (id, secret, scope) = (client.id.clone(), client.secret.clone(), scope.to_owned());
    block_on(async move {
        let r = reqwest::Client::new().post(&url).basic_auth(id, Some(secret)).form(&[("scope", scope)]).send().await.unwrap();
        assert!(r.status().is_success(), "device authorization: {}", r.status());
        r.json::<Value>().await.unwrap()
    })
}

fn device_poll(op: &OidcProvider, client: &Client, device_code: &str) -> (u16, Value) {
    token_request(
        op,
        client,
        vec![("grant_type", "urn:ietf:params:oauth:grant-type:device_code".into()), ("device_code", device_code.into())],
    )
}

#[test]
fn device_flow_refresh_groups_and_disabled_users() {
    for shape in SHAPES {
        let op = OidcProvider::start(shape);
        let client = op.register_client(&[redirect_uri()]);
        let da = device_start(&op, &client, "openid profile email offline_access");
        eprintln!("{shape:?} device authorization response: {da:#}");
        let device_code = da["device_code"].as_str().unwrap();
        // oidc-provider leaves `interval` out (RFC 8628: then 5 s) and never answers slow_down
        assert!(da.get("interval").is_none_or(Value::is_number), "{da}");
        // before the person approves: authorization_pending
        let (status, pending) = device_poll(&op, &client, device_code);
        assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");

        // a wrong code is refused on the page; then the right one (the complete URI in one
        // shape, the URI and the typed code in the other)
        let wrong = op.approve_device(da["verification_uri"].as_str().unwrap(), Some("BCDF-GHJK"), "alice", "alice-pw");
        assert!(wrong.unwrap_err().contains("incorrect"));
        match shape {
            Shape::Keycloak => op.approve_device(da["verification_uri_complete"].as_str().unwrap(), None, "alice", "alice-pw"),
            Shape::Authentik => {
                op.approve_device(da["verification_uri"].as_str().unwrap(), Some(da["user_code"].as_str().unwrap()), "alice", "alice-pw")
            }
        }
        .unwrap();
        // the code is used now
        let again = op.approve_device(da["verification_uri_complete"].as_str().unwrap(), None, "alice", "alice-pw");
        assert!(again.is_err(), "{again:?}");

        let (status, tokens) = device_poll(&op, &client, device_code);
        assert_eq!(status, 200, "{tokens}");
        let rt0 = tokens["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh token: {tokens}")).to_owned();
        let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(groups(&claims), vec![shape.group("team-demo")]);
        // polling again after the tokens came: invalid_grant, and the provider revokes what the
        // device code gave (as for a replayed authorization code)
        let (status, used) = device_poll(&op, &client, device_code);
        assert_eq!((status, used["error"].as_str()), (400, Some("invalid_grant")), "{used}");
        let (status, revoked) = refresh(&op, &client, &rt0);
        assert_eq!((status, revoked["error"].as_str()), (400, Some("invalid_grant")), "{revoked}");

        // a second device login, polled once
        let da = device_start(&op, &client, "openid profile email offline_access");
        op.approve_device(da["verification_uri_complete"].as_str().unwrap(), None, "alice", "alice-pw").unwrap();
        let (status, tokens) = device_poll(&op, &client, da["device_code"].as_str().unwrap());
        assert_eq!(status, 200, "{tokens}");
        let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();

        // refresh: a new ID token, and a new refresh token (rotated on every use)
        let (status, refreshed) = refresh(&op, &client, &rt1);
        assert_eq!(status, 200, "{refreshed}");
        let rt2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rt1, rt2);
        let claims = jwt_claims(refreshed["id_token"].as_str().unwrap());
        eprintln!("{shape:?} refreshed ID token claims: {claims:#}");
        assert_eq!(groups(&claims), vec![shape.group("team-demo")]);

        // groups changed at the provider: in the next refreshed ID token
        op.set_groups("alice", &["team-demo", "registry-admins"]);
        let (status, refreshed) = refresh(&op, &client, &rt2);
        assert_eq!(status, 200, "{refreshed}");
        let rt3 = refreshed["refresh_token"].as_str().unwrap().to_owned();
        let claims = jwt_claims(refreshed["id_token"].as_str().unwrap());
        assert_eq!(groups(&claims), vec![shape.group("team-demo"), shape.group("registry-admins")]);

        // disabled: the refresh fails with invalid_grant, and so does the login
        op.disable("alice");
        let (status, refused) = refresh(&op, &client, &rt3);
        assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_grant")), "{refused}");
        let req = auth_request(&op, &client, "openid");
        let page = op.try_browser_login(&req.url, "alice", "alice-pw").unwrap_err();
        assert!(page.contains("Account is disabled"), "{page}");
        let da2 = device_start(&op, &client, "openid offline_access");
        let refused = op.approve_device(da2["verification_uri_complete"].as_str().unwrap(), None, "alice", "alice-pw");
        assert!(refused.unwrap_err().contains("Account is disabled"));
        // enabled again: the same refresh token works (a refused refresh does not consume it)
        op.enable("alice");
        let (status, refreshed) = refresh(&op, &client, &rt3);
        assert_eq!(status, 200, "{refreshed}");
        let rt4 = refreshed["refresh_token"].as_str().unwrap().to_owned();

        // a rotated refresh token used again: invalid_grant, and the whole grant is revoked
        let (status, reused) = refresh(&op, &client, &rt3);
        assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")), "{reused}");
        let (status, revoked) = refresh(&op, &client, &rt4);
        assert_eq!((status, revoked["error"].as_str()), (400, Some("invalid_grant")), "{revoked}");
    }
}

#[test]
fn client_secret_post_clients_work_too() {
    let op = OidcProvider::start(Shape::Authentik);
    let client = op.register_client_with(serde_json::json!({
        "redirect_uris": [redirect_uri()],
        "token_endpoint_auth_method": "client_secret_post",
    }));
    let req = auth_request(&op, &client, "openid profile");
    let back = op.browser_login(&req.url, "carol", "carol-pw");
    let code = query_params(&back)["code"].clone();
    let url = op.endpoint("token_endpoint");
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect_uri()),
        ("code_verifier", req.verifier),
        ("client_id", client.id.clone()),
        ("client_secret", client.secret.clone()),
    ];
    let tokens: Value = block_on(async move { reqwest::Client::new().post(&url).form(&form).send().await.unwrap().json().await.unwrap() });
    let claims = jwt_claims(tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}")));
    assert_eq!(groups(&claims), vec!["registry-admins"]);
}
