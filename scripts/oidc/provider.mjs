#!/usr/bin/env node
// scripts/oidc/provider.mjs: one real OpenID provider (panva's certified `oidc-provider`, 8.x)
// on 127.0.0.1 over plain HTTP, for Berth's tests of human login. Installed by scripts/oidc.sh;
// started by the tests (crates/berth/tests/support/oidc.rs), one process per test.
//
//   node scripts/oidc/provider.mjs [--port N] [--shape keycloak|authentik] [--exit-with-stdin]
//   (or OIDC_PORT / OIDC_SHAPE; --port 0, the default, takes any free port)
//
// Prints exactly one line `listening <issuer>` on stdout once it serves; everything else goes to
// stderr. With --exit-with-stdin it exits when its standard input closes (the test that started
// it died), so no provider outlives its test.
//
// Shapes (what Berth will meet in the wild):
//   keycloak   issuer http://127.0.0.1:<port>/realms/acme, Keycloak's endpoint paths
//              (/protocol/openid-connect/auth, .../token, .../certs, .../logout, .../auth/device,
//              /device); `groups` holds group paths ("/team-demo"); `email_verified` is sent.
//   authentik  issuer http://127.0.0.1:<port>/application/o/berth/ (with the trailing slash, as
//              authentik's; so is the ID token's `iss`), authentik's endpoint paths
//              (/application/o/authorize/, /application/o/token/, .../berth/jwks/,
//              .../berth/end-session/); `groups` holds plain names ("team-demo").
//
// Users (in memory; passwords checked): alice/alice-pw [team-demo], bob/bob-pw [team-other],
// carol/carol-pw [registry-admins], dave/dave-pw (no groups: `groups` is []). Subjects are
// stable opaque ids (a fixed UUID per user in the keycloak shape, a 64-hex-digit hash in the
// authentik shape), never the user names.
//
// Claims: `conformIdTokenClaims: false`, so the ID token itself carries every claim its scopes
// grant. Scope `profile` gives name, preferred_username and groups (authentik puts groups in
// profile; Keycloak's usual group mapper sends them by default), scope `email` gives email
// (+ email_verified in the keycloak shape), scope `groups` gives groups alone.
//
// Features: open dynamic client registration (each test registers its own client), PKCE S256
// required for the code flow, the device flow, RP-initiated logout (end_session_endpoint),
// revocation, introspection, refresh tokens when `offline_access` is asked (also without
// prompt=consent, as Keycloak and authentik do: see offlineAccessWithoutPromptConsent), rotated
// on every use (a rotated refresh token used again revokes the whole grant). devInteractions are
// off: the login form below (plain HTML forms, no JavaScript needed) checks the passwords, and
// consent is granted automatically, as Keycloak's default client settings do. ID and access
// tokens live 300 s, authorization codes 60 s, device codes 600 s, refresh tokens and grants
// 14 days. Signing: a fresh RS256 key per process. State is in memory only.
//
// Test control (outside the provider's routes, answered to loopback peers only):
//   GET  /test/users/<name>            the user as JSON
//   POST /test/users/<name>            JSON {"groups":[...], "email":..., "name":...,
//                                      "password":...}: change (or, with a password, create)
//   POST /test/users/<name>/disable    logins are refused, refresh_token (and code) grants for
//                                      the user fail with invalid_grant
//   POST /test/users/<name>/enable
//   GET  /test/health                  {"issuer":..., "shape":...}
// Group names given there are plain ("team-demo"); the keycloak shape sends them as paths.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { interactionPolicy } from 'oidc-provider';

const log = (...args) => console.error('[oidc]', ...args);

// --- arguments ---------------------------------------------------------------------------------
const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    shape: { type: 'string' },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});
const port = Number(args.port ?? process.env.OIDC_PORT ?? 0);
const shapeName = args.shape ?? process.env.OIDC_SHAPE ?? 'keycloak';
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  log(`bad --port ${args.port}`);
  process.exit(2);
}

// --- shapes ------------------------------------------------------------------------------------
// mount: the path prefix the provider's routes live under; issuerPath: the issuer's path;
// discovery: where /.well-known/openid-configuration is served (the issuer + that suffix).
const SHAPES = {
  keycloak: {
    mount: '/realms/acme',
    issuerPath: '/realms/acme',
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      userinfo: '/protocol/openid-connect/userinfo',
      jwks: '/protocol/openid-connect/certs',
      end_session: '/protocol/openid-connect/logout',
      device_authorization: '/protocol/openid-connect/auth/device',
      code_verification: '/device',
      revocation: '/protocol/openid-connect/revoke',
      introspection: '/protocol/openid-connect/token/introspect',
      registration: '/clients-registrations/openid-connect',
      pushed_authorization_request: '/protocol/openid-connect/ext/par/request',
    },
    par: true,
    group: (g) => `/${g}`,
    emailVerified: true,
    subject: (name) => ({
      alice: '5c2b9a4e-1f0d-4c53-9a1e-8d8f0b6a1a01',
      bob: '7e41d0c2-3b6a-4f7e-b2c9-1a5d9e3f2b02',
      carol: '9a0f6e13-5d2c-4b8a-8e47-3c6b1f0d4c03',
      dave: 'b3d7c8f4-9e1a-4d6b-a5f2-6e0c2d1b7d04',
    })[name] ?? crypto.createHash('sha256').update(`keycloak/acme/${name}`).digest('hex').replace(
      /^(.{8})(.{4})(.{4})(.{4})(.{12}).*$/, '$1-$2-$3-$4-$5',
    ),
  },
  authentik: {
    mount: '/application/o',
    issuerPath: '/application/o/berth/',
    routes: {
      authorization: '/authorize/',
      token: '/token/',
      userinfo: '/userinfo/',
      introspection: '/introspect/',
      revocation: '/revoke/',
      device_authorization: '/device/',
      jwks: '/berth/jwks/',
      end_session: '/berth/end-session/',
      code_verification: '/berth/device-verify/',
      registration: '/berth/register/',
    },
    par: false,
    group: (g) => g,
    emailVerified: false,
    // authentik's default subject mode is a hash of the user's id
    subject: (name) => crypto.createHash('sha256').update(`authentik/berth/${name}`).digest('hex'),
  },
};
const shape = SHAPES[shapeName];
if (!shape) {
  log(`unknown --shape ${shapeName}: keycloak or authentik`);
  process.exit(2);
}

// --- users -------------------------------------------------------------------------------------
const users = new Map();
function addUser(username, password, groups, name) {
  users.set(username, {
    username,
    password,
    groups,
    name,
    email: `${username}@example.com`,
    disabled: false,
    sub: shape.subject(username),
  });
}
addUser('alice', 'alice-pw', ['team-demo'], 'Alice Demo');
addUser('bob', 'bob-pw', ['team-other'], 'Bob Other');
addUser('carol', 'carol-pw', ['registry-admins'], 'Carol Admin');
addUser('dave', 'dave-pw', [], 'Dave Nogroup');

const userBySub = (sub) => [...users.values()].find((u) => u.sub === sub);

function claimsOf(user) {
  const claims = {
    sub: user.sub,
    name: user.name,
    preferred_username: user.username,
    email: user.email,
    groups: user.groups.map(shape.group),
  };
  if (shape.emailVerified) claims.email_verified = true;
  return claims;
}

// --- pages (no JavaScript, no external resources) ------------------------------------------------
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
})[c]);

function page(title, body, id = 'page') {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><div id="${id}">
<h1>${esc(title)}</h1>
${body}
</div></body></html>
`;
}

function loginPage(uid, { error, username } = {}) {
  return page('Sign in to acme', `${error ? `<p id="error" class="error">${esc(error)}</p>\n` : ''}<form id="login" method="post" action="/interaction/${esc(uid)}/login">
<label>Username <input type="text" name="username" value="${esc(username ?? '')}" autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`, 'login-page');
}

// --- the provider ------------------------------------------------------------------------------
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const origin = `http://127.0.0.1:${server.address().port}`;
const issuer = `${origin}${shape.issuerPath}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const policy = interactionPolicy.base();
// A session whose user was disabled since must log in again (and be refused there).
policy.get('login').checks.add(new interactionPolicy.Check(
  'account_disabled',
  'the account is disabled',
  (ctx) => {
    const { accountId } = ctx.oidc.session;
    if (accountId) {
      const user = userBySub(accountId);
      if (!user || user.disabled) return interactionPolicy.Check.REQUEST_PROMPT;
    }
    return interactionPolicy.Check.NO_NEED_TO_PROMPT;
  },
));

const configuration = {
  routes: shape.routes,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  clients: [],
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups'],
    email: ['email', ...(shape.emailVerified ? ['email_verified'] : [])],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const user = userBySub(sub);
    // A disabled user has no account: every grant that looks the account up (refresh_token,
    // authorization_code, device_code) fails with invalid_grant.
    if (!user || user.disabled) return undefined;
    return {
      accountId: sub,
      async claims() {
        return claimsOf(user);
      },
    };
  },
  interactions: {
    policy,
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: false },
    deviceFlow: {
      enabled: true,
      charset: 'base-20',
      mask: '****-****',
      userCodeInputSource(ctx, form, out, err) {
        let msg = '<p>Enter the code displayed on your device</p>';
        if (err && (err.userCode || err.name === 'NoCodeError')) {
          msg = '<p id="error" class="error">The code you entered is incorrect. Try again</p>';
        } else if (err && err.name === 'AbortedError') {
          msg = '<p id="error" class="error">The sign-in request was interrupted</p>';
        } else if (err) {
          msg = `<p id="error" class="error">There was an error processing your request: ${esc(out?.error_description ?? out?.error ?? '')}</p>`;
        }
        ctx.body = page('Device sign-in', `${msg}\n${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`, 'device-input');
      },
      userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p><strong>${esc(client.clientName || client.clientId)}</strong> asks to sign in.
The code should be displayed on your device: <code id="user-code">${esc(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`, 'device-confirm');
      },
      successSource(ctx) {
        const { clientId, clientName } = ctx.oidc.client;
        ctx.body = page('Sign-in success', `<p id="device-success">Your sign-in with ${esc(clientName || clientId)} was successful, you can now close this page and return to your device.</p>`, 'device-success-page');
      },
    },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource(ctx, form) {
        ctx.body = page('Sign out', `<p>Do you want to sign out from ${esc(ctx.host)}?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`, 'logout-page');
      },
      postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p id="logout-success">You are signed out.</p>', 'logout-success-page');
      },
    },
    pushedAuthorizationRequests: { enabled: shape.par },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    // RFC 9207: the authorization response carries `iss` (oidc-provider always sends it)
  },
  pkce: { methods: ['S256'], required: () => true },
  clientBasedCORS: () => true,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
  responseTypes: ['code', 'none'],
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && code.scopes.has('offline_access'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    ClientCredentials: 300,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 300,
    Interaction: 600,
    RefreshToken: 14 * 24 * 3600,
    Session: 24 * 3600,
    BackchannelAuthenticationRequest: 600,
  },
  pairwiseIdentifier: async (ctx, accountId, client) => crypto.createHash('sha256')
    .update(`${client.sectorIdentifier}/${accountId}/berth-test`).digest('hex'),
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error" class="error"><code>${esc(out.error)}</code>: ${esc(out.error_description ?? '')}</p>`, 'error-page');
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => log('server_error', err));
provider.on('grant.error', (ctx, err) => log('grant.error', err.message, err.error_description ?? '', err.error_detail ?? ''));
provider.on('authorization.error', (ctx, err) => log('authorization.error', err.message, err.error_description ?? '', err.error_detail ?? ''));
const providerCallback = provider.callback();

// --- offline_access without prompt=consent ---------------------------------------------------------
// OpenID Connect Core says an authorization request's offline_access is honoured only with
// prompt=consent, and oidc-provider drops it otherwise. Keycloak and authentik grant it without:
// to behave as they do, an authorization request (GET, the way Berth sends it) that asks for
// offline_access gets `consent` added to its prompt (unless it says prompt=none). Consent is
// granted automatically below, so the user sees nothing more.
function offlineAccessWithoutPromptConsent(url) {
  const scope = url.searchParams.get('scope');
  if (!scope || !scope.split(' ').includes('offline_access')) return false;
  const prompt = (url.searchParams.get('prompt') ?? '').split(' ').filter(Boolean);
  if (prompt.includes('consent') || prompt.includes('none')) return false;
  prompt.push('consent');
  url.searchParams.set('prompt', prompt.join(' '));
  return true;
}

// --- interactions: login form, automatic consent -------------------------------------------------
async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function grantConsent(req, res, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, page('Error', `<p id="error" class="error">${esc(err.error ?? 'invalid_request')}: ${esc(err.error_description ?? err.message)}</p>`, 'error-page'));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p id="error" class="error">interaction mismatch</p>', 'error-page'));
    return;
  }
  const promptName = details.prompt.name;

  if (req.method === 'GET' && !action) {
    if (promptName === 'login') {
      send(res, 200, loginPage(uid, { username: details.params.login_hint }));
    } else if (promptName === 'consent') {
      await grantConsent(req, res, details);
    } else {
      send(res, 400, page('Error', `<p id="error" class="error">unknown prompt ${esc(promptName)}</p>`, 'error-page'));
    }
    return;
  }

  if (req.method === 'POST' && action === 'abort') {
    await readBody(req);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'POST' && action === 'login' && promptName === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const user = users.get(username);
    if (!user || !password || user.password !== password) {
      log(`login refused for ${JSON.stringify(username)}: invalid username or password`);
      send(res, 200, loginPage(uid, { error: 'Invalid username or password.', username }));
      return;
    }
    if (user.disabled) {
      log(`login refused for ${username}: disabled`);
      send(res, 200, loginPage(uid, { error: 'Account is disabled, contact your admin.', username }));
      return;
    }
    log(`login ${username} (sub ${user.sub})`);
    await provider.interactionFinished(req, res, {
      login: { accountId: user.sub, amr: ['pwd'] },
    }, { mergeWithLastSubmission: false });
    return;
  }

  send(res, 405, page('Error', `<p id="error" class="error">${esc(req.method)} ${esc(action ?? '')} not allowed at prompt ${esc(promptName)}</p>`, 'error-page'));
}

// --- test control --------------------------------------------------------------------------------
function publicUser(user) {
  const { password, ...rest } = user;
  return { ...rest, claims: claimsOf(user) };
}

async function control(req, res, name, action) {
  const json = (status, value) => send(res, status, `${JSON.stringify(value)}\n`, 'application/json');
  let user = users.get(name);
  if (req.method === 'GET' && !action) {
    if (!user) return json(404, { error: `no user ${name}` });
    return json(200, publicUser(user));
  }
  if (req.method !== 'POST') return json(405, { error: 'GET or POST' });
  const raw = await readBody(req);
  if (!action) {
    let body;
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch (err) {
      return json(400, { error: `bad JSON: ${err.message}` });
    }
    if (!user) {
      if (typeof body.password !== 'string') return json(404, { error: `no user ${name} (give a password to create it)` });
      addUser(name, body.password, [], name);
      user = users.get(name);
    }
    if (body.groups !== undefined) {
      if (!Array.isArray(body.groups) || !body.groups.every((g) => typeof g === 'string')) {
        return json(400, { error: 'groups: an array of strings' });
      }
      user.groups = body.groups.map((g) => g.replace(/^\//, ''));
    }
    for (const key of ['email', 'name', 'password']) {
      if (typeof body[key] === 'string') user[key] = body[key];
    }
    log(`test: user ${name} now ${JSON.stringify(publicUser(user).claims)}`);
    return json(200, publicUser(user));
  }
  if (!user) return json(404, { error: `no user ${name}` });
  if (action === 'disable' || action === 'enable') {
    user.disabled = action === 'disable';
    log(`test: user ${name} ${action}d`);
    return json(200, publicUser(user));
  }
  return json(404, { error: `unknown action ${action}` });
}

// --- dispatch ------------------------------------------------------------------------------------
const discoveryPath = `${shape.issuerPath.replace(/\/$/, '')}/.well-known/openid-configuration`;

server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, origin);
    const path = url.pathname;
    let m;
    if ((m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/.exec(path))) {
      await interaction(req, res, m[1], m[2]);
      return;
    }
    if ((m = /^\/test\/users\/([A-Za-z0-9._@-]+)(?:\/(disable|enable))?$/.exec(path))) {
      const peer = req.socket.remoteAddress ?? '';
      if (!(peer.startsWith('127.') || peer === '::1' || peer.startsWith('::ffff:127.'))) {
        send(res, 403, 'loopback only\n', 'text/plain');
        return;
      }
      await control(req, res, m[1], m[2]);
      return;
    }
    if (path === '/test/health') {
      send(res, 200, `${JSON.stringify({ issuer, shape: shapeName })}\n`, 'application/json');
      return;
    }
    if (path === discoveryPath) {
      // served at the issuer + /.well-known/openid-configuration, the provider's routes at mount
      req.originalUrl = `${shape.mount}/.well-known/openid-configuration${url.search}`;
      req.url = `/.well-known/openid-configuration${url.search}`;
      providerCallback(req, res);
      return;
    }
    if (path === shape.mount || path.startsWith(`${shape.mount}/`)) {
      const inner = path.slice(shape.mount.length) || '/';
      if (req.method === 'GET' && inner.replace(/\/$/, '') === shape.routes.authorization.replace(/\/$/, '')) {
        if (offlineAccessWithoutPromptConsent(url)) log('offline_access asked without prompt=consent: added it');
      }
      req.originalUrl = `${path}${url.search}`;
      req.url = `${inner}${url.search}`;
      providerCallback(req, res);
      return;
    }
    send(res, 404, page('Not found', `<p id="error">nothing at ${esc(path)}</p>`, 'error-page'));
  } catch (err) {
    log('error', err);
    if (!res.headersSent) send(res, 500, page('Error', `<p id="error" class="error">${esc(err.message)}</p>`, 'error-page'));
  }
});

if (args['exit-with-stdin']) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

log(`oidc-provider shape ${shapeName}, issuer ${issuer}`);
process.stdout.write(`listening ${issuer}\n`);
