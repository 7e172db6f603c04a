//! Content discovery: tags list, the catalog (both with `n`/`last` pagination and `Link`
//! headers), and the referrers API.

use axum::response::{IntoResponse, Response};
use berth_access::Action;
use berth_meta::Page;
use berth_oci::{media, RepoName};
use http::{header, StatusCode};

use super::blobs::parse_digest;
use super::{pagination, Request};
use crate::error::{ApiError, ApiResult};

fn next_link(path: &str, n: u32, last: &str) -> String {
    let q = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.to_owned())]).unwrap_or_default();
    format!("<{path}?{q}>; rel=\"next\"")
}

/// Fetches one more than asked so a `Link` is sent only when another page exists.
fn paginate(mut items: Vec<String>, n: Option<u32>, path: &str) -> (Vec<String>, Option<String>) {
    match n {
        Some(n) if items.len() > n as usize => {
            items.truncate(n as usize);
            let link = items.last().map(|l| next_link(path, n, l));
            (items, link)
        }
        _ => (items, None),
    }
}

fn json_page(body: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(l) = link.and_then(|l| http::HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    resp
}

pub async fn tags(req: &Request, repo: &RepoName) -> ApiResult {
    let (n, last) = pagination(req)?;
    let page = Page { last: last.as_deref(), n: n.map(|n| n.saturating_add(1)) };
    let tags = req.state.meta.list_tags(repo, page).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, berth_oci::ErrorCode::NameUnknown, format!("repository {repo} is not known"))
    })?;
    let (tags, link) = paginate(tags, n, &format!("/v2/{repo}/tags/list"));
    Ok(json_page(serde_json::json!({ "name": repo.as_str(), "tags": tags }), link))
}

pub async fn catalog(req: &Request) -> ApiResult {
    let (n, last) = pagination(req)?;
    let full = req.caller.full_catalog();
    let mut repos = Vec::new();
    let mut cursor = last.clone();
    // Filtered listings page through the store until enough visible names are found.
    loop {
        let want = n.map(|n| n.saturating_add(1));
        let batch = req.state.meta.list_repositories(Page { last: cursor.as_deref(), n: if full { want } else { Some(1000) } }).await?;
        let exhausted = full || batch.len() < 1000;
        cursor = batch.last().cloned();
        repos.extend(batch.into_iter().filter(|r| full || req.caller.allows(r, Action::Pull)));
        if exhausted || n.is_some_and(|n| repos.len() > n as usize) {
            break;
        }
    }
    let (repos, link) = paginate(repos, n, "/v2/_catalog");
    Ok(json_page(serde_json::json!({ "repositories": repos }), link))
}

pub async fn referrers(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let subject = parse_digest(raw)?;
    let filter = req.query_param("artifactType");
    let found = req.state.meta.referrers(repo, &subject, filter.as_deref()).await?;
    let manifests: Vec<serde_json::Value> = found
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({ "mediaType": r.media_type, "digest": r.digest.as_str(), "size": r.size });
            if let Some(a) = r.artifact_type {
                d["artifactType"] = a.into();
            }
            if let Some(a) = r.annotations {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, media::OCI_INDEX)], body.to_string()).into_response();
    if filter.is_some() {
        resp.headers_mut().insert("oci-filters-applied", http::HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_links() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(paginate(v(&["a", "b", "c"]), Some(2), "/p"), (v(&["a", "b"]), Some("</p?n=2&last=b>; rel=\"next\"".into())));
        assert_eq!(paginate(v(&["a", "b"]), Some(2), "/p"), (v(&["a", "b"]), None));
        assert_eq!(paginate(v(&["a"]), None, "/p"), (v(&["a"]), None));
        assert_eq!(paginate(v(&["a"]), Some(0), "/p"), (v(&[]), None));
    }
}
