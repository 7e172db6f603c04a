//! The key cache of one identity provider: fetched lazily (startup never waits for an issuer),
//! kept for a while, refetched once when a token names an unknown `kid` (at most once per 30 s,
//! with concurrent requests sharing that one fetch), and kept when the issuer is down so the last
//! good keys go on working. Fetches have short timeouts and a size limit and are counted in
//! metrics. Keys named or embedded in tokens (`jku`, `x5u`, `jwk`) are never fetched: only the
//! provider's configured discovery or JWKS URL is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_jose::{Algorithm, JwkSet};
use tokio::sync::{Mutex, RwLock};

use super::provider::{normalize_issuer, validate_fetch_url, KeySource, Provider};

/// How long fetched keys are used before the next use refetches them (in the background of that
/// request: if the refetch fails, the old keys stay).
pub const KEY_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// At most one refetch for an unknown `kid` per provider in this period.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch with no keys at all, do not try again before this.
pub const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The keys of a provider at one moment.
#[derive(Debug)]
pub struct KeySnapshot {
    pub keys: JwkSet,
    /// `id_token_signing_alg_values_supported` from discovery, when there was discovery.
    pub advertised: Option<Vec<Algorithm>>,
    /// Where they came from (for `idp test` and `token explain`).
    pub source: String,
    /// The endpoints discovery advertised (human login), when there was discovery.
    pub endpoints: Option<super::login::Endpoints>,
    pub fetched_at: Option<Instant>,
}

/// Why keys could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

struct FetchState {
    /// When the last fetch started (for the refetch limits).
    last_attempt: Option<Instant>,
    /// When the last fetch finished (requests that waited for it share its outcome).
    last_done: Option<Instant>,
    /// When a token's unknown `kid` last caused a fetch (limited to one per 30 s).
    last_kid_fetch: Option<Instant>,
    last_error: Option<String>,
}

/// The key cache of one provider.
pub struct KeyCache {
    provider: String,
    issuer: String,
    source: KeySource,
    client: Option<reqwest::Client>,
    current: RwLock<Option<Arc<KeySnapshot>>>,
    fetch: Mutex<FetchState>,
}

impl KeyCache {
    pub fn new(p: &Provider) -> Result<KeyCache, KeyError> {
        let (current, client) = match &p.keys {
            KeySource::Static(set) => (
                Some(Arc::new(KeySnapshot { keys: set.clone(), advertised: None, source: "static jwks".into(), fetched_at: None, endpoints: None })),
                None,
            ),
            _ => (None, Some(http_client(p.ca_pem.as_deref())?)),
        };
        Ok(KeyCache {
            provider: p.name.clone(),
            issuer: p.issuer.clone(),
            source: p.keys.clone(),
            client,
            current: RwLock::new(current),
            fetch: Mutex::new(FetchState { last_attempt: None, last_done: None, last_kid_fetch: None, last_error: None }),
        })
    }

    /// The current keys, fetching them first if there are none yet or they are old.
    pub async fn get(&self) -> Result<Arc<KeySnapshot>, KeyError> {
        if let Some(s) = self.current.read().await.clone() {
            let fresh = s.fetched_at.is_none_or(|t| t.elapsed() < KEY_MAX_AGE);
            if fresh {
                return Ok(s);
            }
        }
        self.refresh(false).await
    }

    /// Called when a token names a `kid` the current keys lack: refetches unless that happened
    /// in the last 30 s. Returns the (maybe unchanged) keys.
    pub async fn refetch_for_unknown_kid(&self) -> Result<Arc<KeySnapshot>, KeyError> {
        self.refresh(true).await
    }

    /// The HTTP client this provider is fetched with (its CA, timeouts, checked redirects);
    /// None for static keys.
    pub fn http(&self) -> Option<reqwest::Client> {
        self.client.clone()
    }

    /// The last fetch error, if the last attempt failed.
    pub async fn last_error(&self) -> Option<String> {
        self.fetch.lock().await.last_error.clone()
    }

    async fn refresh(&self, unknown_kid: bool) -> Result<Arc<KeySnapshot>, KeyError> {
        let asked_at = Instant::now();
        let mut st = self.fetch.lock().await;
        let current = self.current.read().await.clone();
        if let KeySource::Static(_) = self.source {
            return current.ok_or_else(|| KeyError("no static keys".into()));
        }
        // A fetch ran while we waited for the lock: share its outcome instead of fetching again.
        if st.last_done.is_some_and(|t| t > asked_at) {
            return current.ok_or_else(|| self.failed(&st));
        }
        let kid_recent = st.last_kid_fetch.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL);
        let recent = st.last_attempt.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL);
        match (&current, unknown_kid) {
            (Some(s), true) if kid_recent => return Ok(s.clone()),
            (Some(s), false) if s.fetched_at.is_some_and(|t| t.elapsed() < KEY_MAX_AGE) => return Ok(s.clone()),
            (Some(s), false) if recent => return Ok(s.clone()),
            (None, _) if st.last_attempt.is_some_and(|t| t.elapsed() < FAILED_FETCH_BACKOFF) => return Err(self.failed(&st)),
            _ => {}
        }
        st.last_attempt = Some(Instant::now());
        if unknown_kid {
            st.last_kid_fetch = st.last_attempt;
        }
        let fetched = self.fetch_now().await;
        st.last_done = Some(Instant::now());
        match fetched {
            Ok(snapshot) => {
                metrics::counter!("berth_jwks_fetch_total", "provider" => self.provider.clone(), "result" => "ok").increment(1);
                tracing::info!(provider = %self.provider, source = %snapshot.source, keys = snapshot.keys.keys.len(), skipped = snapshot.keys.skipped.len(), "fetched identity provider keys");
                let snapshot = Arc::new(snapshot);
                *self.current.write().await = Some(snapshot.clone());
                st.last_error = None;
                Ok(snapshot)
            }
            Err(e) => {
                metrics::counter!("berth_jwks_fetch_total", "provider" => self.provider.clone(), "result" => "error").increment(1);
                st.last_error = Some(e.0.clone());
                match current {
                    Some(s) => {
                        tracing::warn!(provider = %self.provider, error = %e, "fetching keys failed; the last good keys stay in use");
                        Ok(s)
                    }
                    None => {
                        tracing::warn!(provider = %self.provider, error = %e, "fetching keys failed");
                        Err(self.failed(&st))
                    }
                }
            }
        }
    }

    fn failed(&self, st: &FetchState) -> KeyError {
        KeyError(format!(
            "the keys of identity provider {:?} could not be fetched: {}",
            self.provider,
            st.last_error.as_deref().unwrap_or("unknown error")
        ))
    }

    /// Fetches discovery (if configured) and the JWKS now, without touching the cache. Used by
    /// the cache and by `berth idp test`.
    pub async fn fetch_now(&self) -> Result<KeySnapshot, KeyError> {
        let client = self.client.as_ref().ok_or_else(|| KeyError("static keys are never fetched".into()))?;
        let (jwks_uri, advertised, source, endpoints) = match &self.source {
            KeySource::Static(_) => return Err(KeyError("static keys are never fetched".into())),
            KeySource::JwksUri(u) => (u.clone(), None, format!("jwks {u}"), None),
            KeySource::Discovery(u) => {
                let body = get_limited(client, u).await?;
                let doc: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| KeyError(format!("the discovery document at {u} is not JSON: {e}")))?;
                let iss = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
                if normalize_issuer(iss) != self.issuer {
                    return Err(KeyError(format!(
                        "the discovery document at {u} names issuer {iss:?}, but the identity provider is configured with {:?}",
                        self.issuer
                    )));
                }
                let jwks = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| KeyError(format!("the discovery document at {u} has no jwks_uri")))?
                    .to_owned();
                validate_fetch_url("jwks_uri", &jwks).map_err(KeyError)?;
                let advertised = doc.get("id_token_signing_alg_values_supported").and_then(|v| v.as_array()).map(|a| {
                    a.iter().filter_map(|x| x.as_str()).filter_map(|s| s.parse::<Algorithm>().ok()).collect::<Vec<_>>()
                });
                let endpoints = super::login::Endpoints::from_discovery(&doc);
                (jwks.clone(), advertised, format!("discovery {u} -> jwks {jwks}"), Some(endpoints))
            }
        };
        let body = get_limited(client, &jwks_uri).await?;
        let keys = berth_jose::parse_jwk_set(&body).map_err(|e| KeyError(format!("the JWKS at {jwks_uri} is not usable: {e}")))?;
        Ok(KeySnapshot { keys, advertised, source, fetched_at: Some(Instant::now()), endpoints })
    }
}

/// At most 3 redirects, and every hop must pass the same check as a configured URL (https, or
/// http on loopback), so a redirect cannot move a key fetch to plain http or another scheme.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error("more than 3 redirects");
        }
        match super::provider::validate_fetch_url("redirect target", attempt.url().as_str()) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

pub(crate) fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, KeyError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(redirect_policy())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| KeyError(format!("certificateAuthority is not a PEM certificate: {e}")))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| KeyError(format!("building the HTTP client: {e}")))
}

async fn get_limited(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, KeyError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| KeyError(format!("GET {url}: {}", error_chain(&e))))?;
    if !resp.status().is_success() {
        return Err(KeyError(format!("GET {url}: HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| KeyError(format!("GET {url}: {}", error_chain(&e))))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(KeyError(format!("GET {url}: the document is larger than 1 MiB")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's errors hide the cause (certificate problems, refused connections) in sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod redirect_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route-per-path HTTP server on 127.0.0.1: `/jwks` redirects to `target`, every other
    /// path answers an empty JWK set. Returns its port and a counter of requests.
    async fn server(target: impl Fn(u16) -> String + Send + 'static) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let resp = if req.starts_with("GET /jwks ") {
                    format!("HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", target(port))
                } else {
                    let body = r#"{"keys":[]}"#;
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, hits)
    }

    fn provider(port: u16) -> Provider {
        let spec: super::super::ProviderSpec = serde_json::from_value(serde_json::json!({
            "name": "r", "issuer": format!("http://127.0.0.1:{port}"), "audiences": ["a"],
            "jwksUri": format!("http://127.0.0.1:{port}/jwks")
        }))
        .unwrap();
        spec.resolve().unwrap()
    }

    #[tokio::test]
    async fn every_redirect_hop_is_checked_like_a_configured_url() {
        // 0.0.0.0 reaches this machine but is not a loopback address, so plain http to it is
        // refused; before every hop was checked, the redirect was followed and the fetch worked.
        let (port, hits) = server(|port| format!("http://0.0.0.0:{port}/real")).await;
        let cache = KeyCache::new(&provider(port)).unwrap();
        let e = cache.fetch_now().await.unwrap_err();
        assert!(e.0.contains("must use https"), "{}", e.0);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the redirect target was contacted");
        // A redirect that stays on loopback is followed.
        let (port, hits) = server(|port| format!("http://127.0.0.1:{port}/real")).await;
        let cache = KeyCache::new(&provider(port)).unwrap();
        cache.fetch_now().await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Redirect loops end after 3 hops.
        let (port, _) = server(|port| format!("http://127.0.0.1:{port}/jwks")).await;
        let e = KeyCache::new(&provider(port)).unwrap().fetch_now().await.unwrap_err();
        assert!(e.0.contains("redirect"), "{}", e.0);
    }
}
