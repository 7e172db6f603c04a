//! A small HTTP client for the distribution API that handles authentication transparently:
//! anonymous access, HTTP Basic, and the Docker token flow (a 401 with a Bearer challenge, a
//! token fetched from the realm with `service` and `scope`, the request retried with
//! `Authorization: Bearer`). Tokens are cached per set of scopes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use reqwest::{Method, Url};

use crate::auth::{self, Challenge};

/// An answer from the registry, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub method: Method,
    pub url: Url,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Set when the connection failed while the body was read (e.g. fewer bytes than
    /// `Content-Length` announced); `body` then holds what arrived.
    pub body_error: Option<String>,
}

impl Response {
    /// The first value of a header, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as text, cut to `max` characters, for error messages.
    pub fn body_snippet(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.chars().count() > max {
            format!("{}...", text.chars().take(max).collect::<String>())
        } else {
            text.to_string()
        }
    }

    /// The `Location` header resolved against the request URL.
    pub fn location(&self) -> anyhow::Result<Url> {
        let loc = self.header("location").ok_or_else(|| {
            anyhow!(
                "{} {} answered {} without a Location header",
                self.method,
                self.url.path(),
                self.status
            )
        })?;
        if loc.is_empty() {
            bail!(
                "{} {} answered {} with an empty Location header",
                self.method,
                self.url.path(),
                self.status
            );
        }
        self.url
            .join(loc)
            .with_context(|| format!("Location header {loc:?} is not a valid URL reference"))
    }
}

#[derive(Default)]
struct AuthState {
    /// Tokens by cache key (the sorted scope set they were requested for).
    tokens: HashMap<String, String>,
    /// Set once the registry answered with a Basic challenge.
    basic: bool,
}

/// The client every check uses.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    username: Option<String>,
    password: Option<String>,
    state: Mutex<AuthState>,
}

/// A request being built; send it with [`RequestBuilder::send`].
pub struct RequestBuilder<'a> {
    client: &'a Client,
    method: Method,
    url: Url,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl<'a> RequestBuilder<'a> {
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.url.query_pairs_mut().append_pair(key, value);
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The Accept header a client pulling any kind of manifest sends.
    pub fn accept_manifests(self) -> Self {
        self.header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json",
        )
    }

    pub async fn send(self) -> anyhow::Result<Response> {
        self.client
            .execute(self.method, self.url, self.headers, self.body)
            .await
    }
}

impl Client {
    pub fn new(
        base_url: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> anyhow::Result<Client> {
        let mut base =
            Url::parse(base_url).with_context(|| format!("invalid registry URL {base_url:?}"))?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-conformance/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base,
            username,
            password,
            state: Mutex::new(AuthState::default()),
        })
    }

    /// Resolves a path such as `/v2/name/tags/list` (or an absolute URL) against the base URL.
    pub fn url(&self, path: &str) -> anyhow::Result<Url> {
        let rel = path.strip_prefix('/').unwrap_or(path);
        self.base
            .join(rel)
            .with_context(|| format!("invalid path {path:?}"))
    }

    /// Starts a request to a path relative to the registry root.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder<'_> {
        // Paths are built by the checks themselves; a bad one is a bug, reported as a failed
        // request rather than a panic.
        let url = self.url(path).unwrap_or_else(|_| self.base.clone());
        self.request_url(method, url)
    }

    /// Starts a request to a full URL (e.g. a resolved `Location`).
    pub fn request_url(&self, method: Method, url: Url) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            method,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    fn basic_header(&self) -> Option<String> {
        let user = self.username.as_deref()?;
        let pass = self.password.as_deref().unwrap_or("");
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Some(format!("Basic {enc}"))
    }

    fn cached_auth(&self, key: &str) -> Option<String> {
        let st = self.state.lock().ok()?;
        if let Some(t) = st.tokens.get(key) {
            return Some(format!("Bearer {t}"));
        }
        if st.basic {
            return self.basic_header();
        }
        None
    }

    async fn execute(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response> {
        let scopes = auth::scopes_for(url.path(), url.query());
        let key = auth::cache_key(&scopes);
        let auth_header = self.cached_auth(&key);
        let resp = self
            .send_once(
                &method,
                &url,
                &headers,
                body.as_deref(),
                auth_header.as_deref(),
            )
            .await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        // Pick the challenge to answer: Bearer first, then Basic.
        let challenges: Vec<Challenge> = resp
            .header_all(WWW_AUTHENTICATE.as_str())
            .into_iter()
            .filter_map(auth::parse_challenge)
            .collect();
        let bearer = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }));
        let new_auth = match bearer.or_else(|| challenges.first()) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut want = scopes.clone();
                if let Some(s) = scope {
                    for part in s.split(' ').filter(|p| !p.is_empty()) {
                        if !want.iter().any(|w| w == part) {
                            want.push(part.to_string());
                        }
                    }
                }
                let want = auth::merge_scopes(&want);
                let token = self
                    .fetch_token(&url, realm, service.as_deref(), &want)
                    .await
                    .context("fetching a bearer token after a 401")?;
                if let Ok(mut st) = self.state.lock() {
                    st.tokens.insert(key.clone(), token.clone());
                }
                format!("Bearer {token}")
            }
            Some(Challenge::Basic) => {
                let Some(h) = self.basic_header() else {
                    return Ok(resp); // no credentials to offer: the 401 is the answer
                };
                if let Ok(mut st) = self.state.lock() {
                    st.basic = true;
                }
                h
            }
            None => return Ok(resp),
        };
        if auth_header.as_deref() == Some(new_auth.as_str()) {
            return Ok(resp); // the same credentials were just refused
        }
        self.send_once(&method, &url, &headers, body.as_deref(), Some(&new_auth))
            .await
    }

    async fn fetch_token(
        &self,
        request_url: &Url,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> anyhow::Result<String> {
        let mut url = request_url
            .join(realm)
            .with_context(|| format!("invalid token realm {realm:?}"))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut req = self
            .http
            .get(url.clone())
            .header("Accept", "application/json");
        if let Some(h) = self.basic_header() {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("GET {url} (token endpoint)"))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.context("reading the token response")?;
        if status != 200 {
            bail!(
                "token endpoint {} answered {status}: {}",
                url.path(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("token response is not JSON")?;
        let token = v
            .get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .or_else(|| v.get("access_token").and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("token response has neither `token` nor `access_token`"))?;
        Ok(token.to_string())
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        auth_header: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut req = self.http.request(method.clone(), url.clone());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(a) = auth_header {
            let v = HeaderValue::from_str(a).context("authorization header is not valid")?;
            req = req.header(AUTHORIZATION, v);
        }
        let body = body.unwrap_or_default();
        let sends_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if sends_body || !body.is_empty() {
            // An empty body would go out without any Content-Length; the spec wants an
            // explicit `Content-Length: 0` (e.g. on the POST that opens a chunked upload).
            if body.is_empty()
                && !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            {
                req = req.header(CONTENT_LENGTH, "0");
            }
            req = req.body(body.to_vec());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {}", url.path()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let final_url = resp.url().clone();
        let mut resp = resp;
        let mut body = Vec::new();
        let mut body_error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        Ok(Response {
            method: method.clone(),
            url: final_url,
            status,
            headers,
            body,
            body_error,
        })
    }
}
