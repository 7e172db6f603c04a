//! Content discovery: tags list, the catalog (both with `n`/`last` pagination and `Link`
//! headers), and the referrers API.
//!
//! The listings themselves (and the catalog's bounds) are the core's (`berth_core::registry`);
//! this file renders them with `Link` headers.

use axum::response::{IntoResponse, Response};
use berth_oci::{media, RepoName};

pub use berth_core::registry::{CATALOG_SCAN_ROWS, MAX_CATALOG_PAGE};
use http::{header, StatusCode};

use super::blobs::parse_digest;
use super::{pagination, Request};
use crate::error::ApiResult;

fn next_link(path: &str, n: u32, last: &str) -> String {
    let q = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.to_owned())]).unwrap_or_default();
    format!("<{path}?{q}>; rel=\"next\"")
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
    let listing = req.state.core.list_tags(repo, n, last.as_deref()).await?;
    let link = match (listing.more, n, listing.names.last()) {
        (true, Some(n), Some(l)) => Some(next_link(&format!("/v2/{repo}/tags/list"), n, l)),
        _ => None,
    };
    Ok(json_page(serde_json::json!({ "name": repo.as_str(), "tags": listing.names }), link))
}

pub async fn catalog(req: &Request) -> ApiResult {
    let (n, last) = pagination(req)?;
    let listing = req.state.core.catalog(&req.caller, n, last.as_deref()).await?;
    let n = n.unwrap_or(MAX_CATALOG_PAGE).min(MAX_CATALOG_PAGE);
    let link = if listing.more { listing.names.last().map(|l| next_link("/v2/_catalog", n, l)) } else { None };
    Ok(json_page(serde_json::json!({ "repositories": listing.names }), link))
}

pub async fn referrers(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let subject = parse_digest(raw)?;
    let filter = req.query_param("artifactType");
    let found = req.state.core.referrers(repo, &subject, filter.as_deref()).await?;
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
        assert_eq!(next_link("/p", 2, "b"), "</p?n=2&last=b>; rel=\"next\"");
        assert_eq!(next_link("/v2/_catalog", 1, "a/b c"), "</v2/_catalog?n=1&last=a%2Fb+c>; rel=\"next\"");
    }
}
