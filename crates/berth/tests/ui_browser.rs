//! The web UI in a real browser (headless chromium through playwright-core; scripts/browser.sh
//! installs them) against the real `berth` binary: sign in with the local form, see projects and
//! a pushed image, create and revoke a personal access token, sign out; a guest does not see the
//! controls of a project admin; a form posted from another site fails; every page passes axe-core
//! (serious and critical) and logs no errors (the strict CSP included). Screenshots of each page
//! go to target/screenshots (BERTH_SCREENSHOTS).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use serde_json::{json, Value};
use support::browser::run_script;
use support::{Berth, OciImage};

const ADMIN_SCRIPT: &str = r#"
export default async function ({ page, args, shot, axe }) {
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  const violations = {};
  const check = async (name) => { await shot('ui-' + name); violations[name] = (await axe()).map((v) => v.id + ': ' + v.help); };

  await page.goto(args.base + '/');
  if (!page.url().includes('/login')) throw new Error('not sent to sign in: ' + page.url());
  await check('sign-in');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill(args.password);
  await Promise.all([page.waitForURL(args.base + '/'), page.getByRole('button', { name: 'Sign in' }).click()]);
  await check('projects');
  await page.getByRole('link', { name: 'team', exact: true }).click();
  await page.waitForURL('**/projects/team');
  // A member added in the page.
  await page.getByLabel('Kind').selectOption('group');
  await page.getByLabel('Name', { exact: true }).fill('platform-team');
  await page.getByLabel('Role').selectOption('maintainer');
  await page.getByRole('button', { name: 'Add member' }).click();
  await page.getByText('group platform-team is maintainer in team').waitFor();
  const memberRows = await page.locator('table:has(caption:text("Members of team")) tbody tr').count();
  await check('project');
  const repoLinks = await page.getByRole('link', { name: 'team/app' }).count();
  await page.getByRole('link', { name: 'team/app' }).click();
  await page.getByRole('link', { name: 'v1' }).click();
  await page.waitForURL('**/artifact?**');
  await check('artifact');
  const layers = await page.locator('table:has(caption:text("Layers")) tbody tr').count();

  // A federated robot with claim rules, checked as they are typed.
  await page.goto(args.base + '/projects/team');
  await page.getByRole('link', { name: 'Robots of team' }).click();
  await page.getByLabel('Name', { exact: true }).fill('ci-app');
  await page.getByLabel('Identity provider (empty: a static secret)').selectOption('github');
  await page.getByLabel(/^Claim rules/).fill('repository=myorg/app\nref~refs/heads/*\nnot a rule');
  await page.locator('#rules-check .error').waitFor();
  const verdicts = await page.locator('#rules-check span').allTextContents();
  await page.getByLabel(/^Claim rules/).fill('repository=myorg/app\nref~refs/heads/*');
  await page.getByLabel(/^Permissions/).fill('team/*:pull,push');
  await page.getByRole('button', { name: 'Create robot' }).click();
  await page.getByRole('heading', { name: 'robot$team+ci-app' }).waitFor();
  const robotText = await page.locator('section.robot').innerText();
  await check('robots');

  // The administrators' pages.
  await page.getByRole('link', { name: 'Token tester' }).click();
  await page.getByLabel('Claims (JSON)').fill('{"repository": "myorg/app", "ref": "refs/heads/main"}');
  await page.getByRole('button', { name: 'Match the claims' }).click();
  await page.getByRole('heading', { name: 'Verdict' }).waitFor();
  const verdict = await page.locator('section[aria-labelledby=verdict]').innerText();
  await check('tester');
  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByLabel('Action').selectOption('push');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL('**/audit?**');
  const pushes = await page.locator('table tbody tr:has(td:text-is("push"))').count();
  await check('audit');
  await page.getByRole('link', { name: 'Identity providers' }).click();
  await check('identity-providers');
  await page.getByRole('link', { name: 'System' }).click();
  await check('system');

  await page.getByRole('link', { name: 'My account' }).click();
  await page.getByLabel('Name', { exact: true }).fill('laptop');
  await page.getByLabel('Expires after').fill('7d');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.locator('#new-token').textContent()).trim();
  await check('account');
  // The token pasted into the tester: whose it is and what it may do.
  await page.getByRole('link', { name: 'Token tester' }).click();
  await page.getByLabel('A token (JWT, or a Berth token)').fill(secret);
  await page.getByRole('button', { name: 'Explain the token' }).click();
  await page.getByRole('heading', { name: 'Verdict' }).waitFor();
  const pasted = await page.locator('section[aria-labelledby=verdict]').innerText();
  await page.getByRole('link', { name: 'My account' }).click();
  await page.getByRole('button', { name: 'Revoke laptop' }).click();
  await page.waitForURL('**/account');
  const left = await page.getByRole('button', { name: 'Revoke laptop' }).count();

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.goto(args.base + '/account');
  const signedOut = page.url().includes('/login');
  return { repoLinks, layers, secret, left, signedOut, violations, dialogs, verdicts, robotText, verdict, pushes, memberRows, pasted };
}
"#;

const GUEST_SCRIPT: &str = r#"
export default async function ({ page, args, shot, axe }) {
  await page.goto(args.base + '/login');
  await page.getByLabel('User name').fill('guest');
  await page.getByLabel('Password').fill('guest-password');
  await Promise.all([page.waitForURL(args.base + '/'), page.getByRole('button', { name: 'Sign in' }).click()]);
  await page.goto(args.base + '/projects/team');
  await shot('ui-project-as-guest');
  const addForm = await page.locator('#add-member').count();
  const removeButtons = await page.getByRole('button', { name: /^Remove/ }).count();
  const members = await page.locator('table:has(caption:text("Members of team")) tbody tr').count();
  // On a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await shot('ui-project-phone');
  const phoneViolations = (await axe()).map((v) => v.id);
  const phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.setViewportSize({ width: 1280, height: 800 });

  // Another site's page posts a form to Berth with the session's cookie in the browser: the
  // cookie is SameSite=Lax and the form has no token, so nothing is created.
  await page.goto(args.evil + '/');
  await Promise.all([page.waitForLoadState('load'), page.locator('form').evaluate((f) => f.submit())]);
  await page.waitForTimeout(500);
  const landed = page.url();
  const body = await page.locator('body').innerText();
  return { addForm, removeButtons, members, landed, body, phoneViolations, phoneOverflow };
}
"#;

/// A page of "another site" (another origin: 127.0.0.1 on another port) with a form that posts to
/// Berth's token creation.
fn evil_site(target: String) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let page = format!(
                    "<!doctype html><html lang=\"en\"><head><title>Win a prize</title></head><body><form method=\"post\" action=\"{target}/account/tokens\"><input name=\"name\" value=\"stolen\"><input name=\"csrf\" value=\"guess\"></form></body></html>"
                );
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len());
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_in_a_real_browser() {
    let mut b = Berth::start();
    for (path, body) in [
        // Static keys: the tests talk to loopback only (a sample claim set never verifies).
        (
            "/api/v1/identity-providers",
            json!({"name": "github", "issuer": "https://ci.example.test", "audiences": ["registry.example.com"],
                "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}),
        ),
        ("/api/v1/projects", json!({"name": "team"})),
        ("/api/v1/projects/team/members", json!({"user": "guest", "role": "guest"})),
    ] {
        if path.ends_with("members") {
            let r = b.admin(reqwest::Method::PUT, "/api/v1/users/guest").json(&json!({"password": "guest-password"})).send().await.unwrap();
            assert!(r.status().is_success());
        }
        let r = b.admin(reqwest::Method::POST, path).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }
    let src = OciImage::write(&b.path("src"), "v1", &[20_000]);
    b.push(&src, "team/app:v1").assert_success();
    let base = b.url("");

    let r = run_script(ADMIN_SCRIPT, json!({"base": base, "password": b.admin_password()}));
    assert_eq!(r["repoLinks"], json!(1), "{r:#}");
    assert_eq!(r["memberRows"], json!(2), "the guest and the group added in the page: {r:#}");
    assert_eq!(
        r["verdicts"],
        json!(["✓ repository equals \"myorg/app\"", "✓ ref glob \"refs/heads/*\"", "✗ rule \"not a rule\": use CLAIM=VALUE, CLAIM~GLOB or CLAIM:in=A,B"]),
        "{r:#}"
    );
    let verdict = r["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("robot$team+ci-app") && verdict.contains("its rules hold, but the token did not verify") && verdict.contains("✓ repository equals \"myorg/app\""),
        "{verdict}"
    );
    assert!(r["pushes"].as_u64().unwrap() >= 1, "the push is in the audit log: {r:#}");
    let pasted = r["pasted"].as_str().unwrap();
    assert!(pasted.contains("\"laptop\" of admin") && pasted.contains("administrator") && pasted.contains("Result: accepted"), "{pasted}");
    let robot = r["robotText"].as_str().unwrap();
    assert!(robot.contains("identity provider github") && robot.contains("repository equals \"myorg/app\"") && robot.contains("team/*: pull, push"), "{robot}");
    assert_eq!(r["layers"], json!(1), "{r:#}");
    assert!(r["secret"].as_str().unwrap().starts_with("berth_pat_"), "{r:#}");
    assert_eq!(r["left"], json!(0), "the token was not revoked: {r:#}");
    assert_eq!(r["signedOut"], json!(true), "{r:#}");
    assert_eq!(r["dialogs"], json!([]));
    for (page, v) in r["violations"].as_object().unwrap() {
        assert_eq!(v, &json!([]), "accessibility violations on {page}: {v:#}");
    }
    assert_eq!(r["errors"], json!([]), "the pages logged errors (a CSP violation?): {:#}", r["log"]);

    let evil = evil_site(base.clone());
    let r = run_script(GUEST_SCRIPT, json!({"base": base, "evil": evil}));
    assert_eq!((r["addForm"].clone(), r["removeButtons"].clone()), (json!(0), json!(0)), "a guest sees a project admin's controls: {r:#}");
    assert_eq!(r["phoneViolations"], json!([]), "{r:#}");
    assert_eq!(r["phoneOverflow"], json!(false), "the project page scrolls sideways on a phone: {r:#}");
    assert_eq!(r["members"], json!(2), "a guest sees the members (guest and the group added): {r:#}");
    // 127.0.0.1 on another port is the same site for SameSite, so the cookie went along: the
    // CSRF token is what refused it.
    assert!(r["body"].as_str().unwrap().contains("came from another site"), "{r:#}");
    let tokens: Value = b.admin(reqwest::Method::GET, "/api/v1/users/guest/tokens").send().await.unwrap().json().await.unwrap();
    assert!(tokens.as_array().unwrap().iter().all(|t| t["name"] != "stolen"), "another site created a token: {tokens:#}; browser: {r:#}");
}

const OIDC_SCRIPT: &str = r#"
export default async function ({ page, args, shot, axe }) {
  await page.goto(args.base + '/account');
  await page.getByRole('link', { name: 'Log in with Corp' }).click();
  await page.locator('#login').waitFor();
  await shot('ui-provider-login');
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('alice-pw');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(args.base + '/account');
  const account = await page.locator('main').innerText();
  await shot('ui-account-person');
  const violations = (await axe()).map((v) => v.id);
  return { account, violations };
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_through_the_openid_provider_in_a_real_browser() {
    let op = support::oidc::OidcProvider::start(support::oidc::Shape::Keycloak);
    let mut b = Berth::start();
    let client = op.register_client(&[b.url("/auth/oidc/callback")]);
    let provider = json!({"name": "corp", "preset": "keycloak", "issuer": op.issuer(), "login": {"clientId": client.id, "clientSecret": client.secret, "displayName": "Corp"}});
    for (path, body) in [
        ("/api/v1/identity-providers", provider),
        ("/api/v1/projects", json!({"name": "team-demo"})),
        ("/api/v1/projects/team-demo/members", json!({"group": "team-demo", "role": "developer"})),
    ] {
        let r = b.admin(reqwest::Method::POST, path).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }
    let r = run_script(OIDC_SCRIPT, json!({"base": b.url("")}));
    let account = r["account"].as_str().unwrap();
    assert!(account.contains("alice") && account.contains("corp") && account.contains("team-demo"), "{account}");
    assert!(account.contains("developer"), "{account}");
    assert_eq!(r["violations"], json!([]), "{r:#}");
}
