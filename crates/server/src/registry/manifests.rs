//! Manifest GET/HEAD/PUT/DELETE by tag and by digest. The raw bytes are stored and served; the
//! digest is over those bytes.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_meta::{NewManifest, PutManifestOutcome};
use berth_oci::manifest::{self, ManifestError, MAX_MANIFEST_BYTES};
use berth_oci::{Algorithm, Digest, ErrorCode, Reference, RepoName};
use http::{header, StatusCode};

use super::uploads::now;
use super::Request;
use crate::error::{ApiError, ApiResult};

fn parse_reference(raw: &str) -> ApiResult<Reference> {
    raw.parse::<Reference>().map_err(|e| match e {
        berth_oci::NameError::Digest(d) => ApiError::digest_invalid(d.to_string()),
        other => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, other.to_string()),
    })
}

pub async fn get(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let reference = parse_reference(raw)?;
    let m = req
        .state
        .meta
        .get_manifest(repo, &reference)
        .await?
        .ok_or_else(|| ApiError::manifest_unknown(&reference))?;
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.bytes.len())
        .header("docker-content-digest", m.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", m.digest));
    let body = if req.method == http::Method::HEAD { Body::empty() } else { Body::from(m.bytes) };
    b.body(body).map_err(|e| ApiError::internal("building a response", e))
}

pub async fn put(req: &Request, repo: &RepoName, raw: &str, body: Body) -> ApiResult {
    let reference = parse_reference(raw)?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes or its body failed"),
        )
    })?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::compute(algorithm, &bytes);
    if let Reference::Digest(d) = &reference {
        if d != &digest {
            return Err(ApiError::digest_invalid(format!("manifest content has digest {digest}, not {d}")));
        }
    }
    let parsed = manifest::parse(&bytes, req.header(header::CONTENT_TYPE)).map_err(|e| match e {
        ManifestError::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::SizeInvalid, e.to_string()),
        other => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, other.to_string()),
    })?;
    let tag = match &reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    let outcome = req
        .state
        .meta
        .put_manifest(repo, NewManifest { digest: &digest, bytes: &bytes, parsed: &parsed, tag }, now())
        .await?;
    if let PutManifestOutcome::Missing(missing) = outcome {
        let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ManifestBlobUnknown,
            format!("the manifest references content that is not in {repo}: {}; push it first", list.join(", ")),
        )
        .with_detail(serde_json::json!({ "missing": list })));
    }
    tracing::info!(%repo, %reference, %digest, subject = %req.caller.subject, "manifest pushed");
    let mut resp = (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("{}/v2/{repo}/manifests/{digest}", req.base)),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (header::HeaderName::from_static("docker-content-digest"), digest.to_string()),
        ],
    )
        .into_response();
    if let Some(s) = &parsed.subject {
        if let Ok(v) = http::HeaderValue::from_str(s.digest.as_str()) {
            resp.headers_mut().insert("oci-subject", v);
        }
    }
    Ok(resp)
}

pub async fn delete(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let reference = parse_reference(raw)?;
    let found = match &reference {
        Reference::Digest(d) => req.state.meta.delete_manifest(repo, d).await?,
        Reference::Tag(t) => req.state.meta.delete_tag(repo, t).await?,
    };
    if !found {
        return Err(ApiError::manifest_unknown(&reference));
    }
    tracing::info!(%repo, %reference, subject = %req.caller.subject, "manifest deleted");
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}
