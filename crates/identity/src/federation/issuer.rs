//! Issuer comparison for identity providers: two providers whose issuers are the same URL after
//! normalisation and whose audiences overlap would both claim every token of that issuer (the
//! first listed would capture the other's tokens), so the second is refused.
//! Pure (no IO): the admin API, the CLI (through it) and `apply` call it before storing a
//! provider. Routing tokens still compares `iss` exactly, less one trailing slash
//! ([`super::normalize_issuer`]).

use super::Provider;

/// The form in which two issuers are compared: scheme and host lowercase, the scheme's default
/// port dropped, one trailing slash dropped. Path, query and user info are kept as they are
/// (paths are case-sensitive). Text that is not a URL is compared as given, less one trailing
/// slash.
pub fn issuer_key(issuer: &str) -> String {
    let issuer = issuer.trim();
    let Some((scheme, rest)) = issuer.split_once("://") else {
        return issuer.strip_suffix('/').unwrap_or(issuer).to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // A port follows the last ':' unless that ':' is inside an IPv6 literal `[..]`.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    };
    let default_port = match scheme.as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    let port = port.filter(|p| !p.is_empty() && Some(*p) != default_port);
    let mut key = format!("{scheme}://");
    if let Some(u) = userinfo {
        key.push_str(u);
        key.push('@');
    }
    key.push_str(&host.to_ascii_lowercase());
    if let Some(p) = port {
        key.push(':');
        key.push_str(p);
    }
    key.push_str(path.strip_suffix('/').unwrap_or(path));
    key
}

/// Why provider `name` (resolved as `p`) cannot sit next to `others` (name, resolved provider;
/// `name` itself is skipped): the first other provider with the same issuer after
/// normalisation and a shared audience. None when it can.
pub fn issuer_conflict<'a>(name: &str, p: &Provider, others: impl IntoIterator<Item = (&'a str, &'a Provider)>) -> Option<String> {
    let key = issuer_key(&p.issuer);
    for (other_name, other) in others {
        if other_name == name || issuer_key(&other.issuer) != key {
            continue;
        }
        if let Some(aud) = p.audiences.iter().find(|a| other.audiences.contains(a)) {
            return Some(format!(
                "identity provider {name:?} has issuer {:?}, which is the issuer {:?} of identity provider {other_name:?} \
                 (compared without case in scheme and host, default port and trailing slash), and both accept audience \
                 {aud:?}: every such token would go to only one of them. Add the robots to {other_name:?} instead, or give \
                 the two providers different audiences",
                p.issuer, other.issuer
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::ProviderSpec;

    #[test]
    fn issuer_keys() {
        let cases = [
            ("https://token.actions.githubusercontent.com", "https://token.actions.githubusercontent.com"),
            ("https://token.actions.githubusercontent.com/", "https://token.actions.githubusercontent.com"),
            ("HTTPS://Token.Actions.GitHubUserContent.com/", "https://token.actions.githubusercontent.com"),
            ("https://gitlab.example:443/", "https://gitlab.example"),
            ("https://gitlab.example:8443/", "https://gitlab.example:8443"),
            ("http://k8s.example:80/x/", "http://k8s.example/x"),
            ("http://k8s.example:443", "http://k8s.example:443"),
            ("https://forgejo.example/api/actions/", "https://forgejo.example/api/actions"),
            // One trailing slash only; paths keep their case.
            ("https://a.example/Tenant//", "https://a.example/Tenant/"),
            ("https://[2001:DB8::1]:443/", "https://[2001:db8::1]"),
            ("https://[2001:db8::1]", "https://[2001:db8::1]"),
            ("https://a.example?x=1", "https://a.example?x=1"),
            ("  https://a.example/  ", "https://a.example"),
            ("not a url/", "not a url"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(issuer_key(input), want, "{input:?}");
        }
    }

    fn provider(name: &str, issuer: &str, audiences: &[&str]) -> Provider {
        let spec: ProviderSpec = serde_json::from_value(serde_json::json!({
            "name": name, "issuer": issuer, "audiences": audiences,
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
        }))
        .unwrap();
        spec.resolve().unwrap()
    }

    #[test]
    fn conflicts() {
        let gh = provider("gh", "https://token.actions.githubusercontent.com", &["reg.example", "other.example"]);
        let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
            // Differing only by a trailing slash (the case), or case, or a default port.
            ("gh2", "https://token.actions.githubusercontent.com/", &["reg.example"], Some("gh")),
            ("gh2", "https://TOKEN.actions.githubusercontent.com", &["other.example"], Some("gh")),
            ("gh2", "https://token.actions.githubusercontent.com:443", &["x", "reg.example"], Some("gh")),
            // The same issuer with disjoint audiences is fine: tokens route by audience too.
            ("gh2", "https://token.actions.githubusercontent.com/", &["third.example"], None),
            // Another issuer, or another path.
            ("gl", "https://gitlab.com", &["reg.example"], None),
            ("gh2", "https://token.actions.githubusercontent.com/acme", &["reg.example"], None),
            // The provider itself (an update) is not a conflict.
            ("gh", "https://token.actions.githubusercontent.com/", &["reg.example"], None),
        ];
        for (name, issuer, auds, want) in cases {
            let p = provider(name, issuer, auds);
            let got = issuer_conflict(name, &p, [("gh", &gh)]);
            match (want, &got) {
                (None, None) => {}
                (Some(other), Some(msg)) => {
                    assert!(msg.contains(&format!("identity provider {other:?}")) && msg.contains(name), "{msg}");
                }
                _ => panic!("{name} {issuer} {auds:?}: want conflict with {want:?}, got {got:?}"),
            }
        }
    }
}
