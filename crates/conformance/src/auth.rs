//! Registry authentication pieces that need no network: parsing `WWW-Authenticate` challenges,
//! working out which token scopes a request needs, and the key tokens are cached under.

use std::collections::BTreeMap;

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: send the credentials with every request.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`: fetch a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value. Returns `None` for schemes other than Basic and
/// Bearer, or a Bearer challenge without a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let realm = params.get("realm")?.clone();
        return Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        });
    }
    None
}

/// Parses `key=value, key="quoted, value"` auth-params; keys are lowercased.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_ascii_whitespace() || chars[i] == ',') {
            i += 1;
        }
        let key_start = i;
        while i < chars.len() && chars[i] != '=' && chars[i] != ',' {
            i += 1;
        }
        let key: String = chars[key_start..i]
            .iter()
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if i >= chars.len() || chars[i] != '=' {
            continue;
        }
        i += 1; // '='
        while i < chars.len() && chars[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote
        } else {
            while i < chars.len() && chars[i] != ',' {
                value.push(chars[i]);
                i += 1;
            }
            value = value.trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

/// The token scopes a request to `path` (with query `query`) needs: full access to the
/// repository the path names, and pull access to the `from` repository of a cross-repository
/// mount. `/v2/` itself needs none.
pub fn scopes_for(path: &str, query: Option<&str>) -> Vec<String> {
    let mut scopes = Vec::new();
    if let Some(repo) = repository_of(path) {
        scopes.push(format!("repository:{repo}:pull,push,delete"));
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("from=") {
                let from = percent_decode(v);
                if !from.is_empty() {
                    scopes.push(format!("repository:{from}:pull"));
                }
            }
        }
    }
    scopes
}

/// The repository name in a `/v2/<name>/{blobs,manifests,tags,referrers}/...` path.
pub fn repository_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let mut best: Option<usize> = None;
    for marker in ["/blobs/", "/manifests/", "/tags/", "/referrers/"] {
        if let Some(i) = rest.rfind(marker) {
            best = Some(best.map_or(i, |b: usize| b.max(i)));
        }
    }
    let end = best?;
    let name = &rest[..end];
    (!name.is_empty()).then(|| name.to_string())
}

/// Merges scopes naming the same resource (`type:name:actions`) into one with the union of
/// their actions, keeping first-seen order. Scopes of another shape are kept as they are.
pub fn merge_scopes(scopes: &[String]) -> Vec<String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for s in scopes {
        let Some((resource, actions)) = s.rsplit_once(':').filter(|(r, _)| r.contains(':')) else {
            if !other.contains(s) {
                other.push(s.clone());
            }
            continue;
        };
        let entry = match out.iter_mut().position(|(r, _)| r == resource) {
            Some(i) => &mut out[i].1,
            None => {
                out.push((resource.to_string(), Vec::new()));
                let last = out.len() - 1;
                &mut out[last].1
            }
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if !entry.iter().any(|e| e == a) {
                entry.push(a.to_string());
            }
        }
    }
    out.into_iter()
        .map(|(r, a)| format!("{r}:{}", a.join(",")))
        .chain(other)
        .collect()
}

/// The key a token is cached under: the set of scopes it was asked for.
pub fn cache_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

fn percent_decode(s: &str) -> String {
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:9/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_rejects_others() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn scopes_from_paths() {
        assert_eq!(scopes_for("/v2/", None), Vec::<String>::new());
        assert_eq!(
            scopes_for("/v2/a/b/c/manifests/latest", None),
            vec!["repository:a/b/c:pull,push,delete"]
        );
        assert_eq!(
            scopes_for("/v2/a/blobs/x/blobs/uploads/abc", None),
            vec!["repository:a/blobs/x:pull,push,delete"]
        );
        assert_eq!(
            scopes_for(
                "/v2/t/r/blobs/uploads/",
                Some("mount=sha256%3Aab&from=s%2Fr")
            ),
            vec!["repository:t/r:pull,push,delete", "repository:s/r:pull"]
        );
        assert_eq!(
            scopes_for("/v2/a/referrers/sha256:00", None),
            vec!["repository:a:pull,push,delete"]
        );
    }

    #[test]
    fn merges_scopes_per_resource() {
        let merged = merge_scopes(&[
            "repository:a/b:pull,push,delete".into(),
            "repository:c:pull".into(),
            "repository:a/b:pull,push".into(),
            "registry:catalog:*".into(),
            "repository:c:push".into(),
        ]);
        assert_eq!(
            merged,
            vec![
                "repository:a/b:pull,push,delete",
                "repository:c:pull,push",
                "registry:catalog:*"
            ]
        );
    }

    #[test]
    fn cache_key_is_order_independent() {
        let a = cache_key(&["y".into(), "x".into()]);
        let b = cache_key(&["x".into(), "y".into(), "x".into()]);
        assert_eq!(a, b);
    }
}
