//! Manifest GET/HEAD/PUT/DELETE by tag and by digest. The raw bytes are stored and served; the
//! digest is over those bytes.
//!
//! A PUT may also carry `?tag=` (one or more, distribution-spec 1.2: tags set with a push by
//! digest, each echoed in an `OCI-Tag` header) and `?digest=` (the digest, and its algorithm, a
//! push by tag is addressed by, e.g. sha512). A GET, HEAD or DELETE of a string that is not a
//! valid tag answers 404: no manifest can have that tag.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_core::registry::PutManifest;
use berth_oci::manifest::MAX_MANIFEST_BYTES;
use berth_oci::{Digest, ErrorCode, Reference, RepoName, Tag};
use http::{header, StatusCode};

use super::Request;
use crate::error::{ApiError, ApiResult};

pub use berth_core::registry::MAX_TAGS_PER_PUT;

fn tag_invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::TagInvalid, e.to_string())
}

/// A reference to write to: an invalid tag is a 400 TAG_INVALID.
fn parse_reference(raw: &str) -> ApiResult<Reference> {
    raw.parse::<Reference>().map_err(|e| match e {
        berth_oci::NameError::Digest(d) => ApiError::digest_invalid(d.to_string()),
        other => tag_invalid(other),
    })
}

/// A reference to read or delete: a string that is no valid tag names no manifest, so it is a
/// 404 MANIFEST_UNKNOWN (as the conformance suites expect); a malformed digest stays a 400.
fn parse_lookup(raw: &str) -> ApiResult<Reference> {
    raw.parse::<Reference>().map_err(|e| match e {
        berth_oci::NameError::Digest(d) => ApiError::digest_invalid(d.to_string()),
        other => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, format!("no manifest has this reference: {other}")),
    })
}

/// Tags and digest a PUT addresses: the path's reference plus `?tag=` and `?digest=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutTarget {
    /// Every tag to point at the manifest, path tag first, without repeats.
    pub tags: Vec<Tag>,
    /// The digest the client named (path or `?digest=`); the bytes must hash to it.
    pub digest: Option<Digest>,
}

/// Decides what a PUT writes from its path reference and query. All tags are checked before
/// anything is written: one invalid tag refuses the whole request.
pub(crate) fn put_target(raw: &str, query: &[(String, String)]) -> ApiResult<PutTarget> {
    let reference = parse_reference(raw)?;
    let mut digest = None;
    let mut tags = Vec::new();
    match reference {
        Reference::Tag(t) => tags.push(t),
        Reference::Digest(d) => digest = Some(d),
    }
    for (k, v) in query {
        match k.as_str() {
            "tag" => {
                let t = v.parse::<Tag>().map_err(|e| tag_invalid(format!("?tag=: {e}; nothing was written")))?;
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            "digest" => {
                let d = v.parse::<Digest>().map_err(|e| ApiError::digest_invalid(format!("?digest=: {e}")))?;
                match &digest {
                    Some(have) if have != &d => {
                        return Err(ApiError::digest_invalid(format!(
                            "?digest={d} differs from the digest {have} the request names; send one digest"
                        )));
                    }
                    _ => digest = Some(d),
                }
            }
            _ => {}
        }
    }
    if tags.len() > MAX_TAGS_PER_PUT {
        return Err(tag_invalid(format!(
            "the request sets {} tags; set at most {MAX_TAGS_PER_PUT} per request and the rest with further PUTs by digest; nothing was written",
            tags.len()
        )));
    }
    Ok(PutTarget { tags, digest })
}

pub async fn get(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let reference = parse_lookup(raw)?;
    let m = req.state.core.get_manifest(repo, &reference).await?;
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
    let target = put_target(raw, &req.query())?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| crate::error::body_error(&e, "manifest", MAX_MANIFEST_BYTES))?;
    let put = PutManifest { bytes: &bytes, content_type: req.header(header::CONTENT_TYPE), tags: &target.tags, digest: target.digest.as_ref() };
    let stored = req.state.core.put_manifest(&req.caller, repo, put).await?;
    let digest = stored.digest;
    let mut resp = (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("{}/v2/{repo}/manifests/{digest}", req.base)),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (header::HeaderName::from_static("docker-content-digest"), digest.to_string()),
        ],
    )
        .into_response();
    // Every tag applied, one header each (distribution-spec 1.2's answer to `?tag=`).
    for t in &target.tags {
        if let Ok(v) = http::HeaderValue::from_str(t.as_str()) {
            resp.headers_mut().append("oci-tag", v);
        }
    }
    if let Some(s) = &stored.parsed.subject {
        if let Ok(v) = http::HeaderValue::from_str(s.digest.as_str()) {
            resp.headers_mut().insert("oci-subject", v);
        }
    }
    Ok(resp)
}

pub async fn delete(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let reference = parse_lookup(raw)?;
    req.state.core.delete_manifest(&req.caller, repo, &reference).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    #[test]
    fn put_target_table() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let tags = |ts: &[&str]| ts.iter().map(|t| t.parse::<Tag>().unwrap()).collect::<Vec<_>>();
        let d = |s: &str| Some(s.parse::<Digest>().unwrap());
        let many: Vec<(String, String)> = (0..MAX_TAGS_PER_PUT).map(|i| ("tag".to_owned(), format!("t{i}"))).collect();
        type Case<'a> = (&'a str, Vec<(String, String)>, Result<PutTarget, ErrorCode>);
        let cases: Vec<Case> = vec![
            ("latest", q(&[]), Ok(PutTarget { tags: tags(&["latest"]), digest: None })),
            (D256, q(&[]), Ok(PutTarget { tags: vec![], digest: d(D256) })),
            (D256, q(&[("tag", "a"), ("tag", "b"), ("tag", "a")]), Ok(PutTarget { tags: tags(&["a", "b"]), digest: d(D256) })),
            ("v1", q(&[("digest", D512)]), Ok(PutTarget { tags: tags(&["v1"]), digest: d(D512) })),
            ("v1", q(&[("tag", "v1"), ("tag", "v2")]), Ok(PutTarget { tags: tags(&["v1", "v2"]), digest: None })),
            (D256, q(&[("digest", D256), ("n", "1")]), Ok(PutTarget { tags: vec![], digest: d(D256) })),
            (D256, q(&[("tag", "ok"), ("tag", "not/valid")]), Err(ErrorCode::TagInvalid)),
            (D256, q(&[("tag", "")]), Err(ErrorCode::TagInvalid)),
            ("-bad", q(&[]), Err(ErrorCode::TagInvalid)),
            ("sha256:short", q(&[]), Err(ErrorCode::DigestInvalid)),
            (D256, q(&[("digest", D512)]), Err(ErrorCode::DigestInvalid)),
            ("v1", q(&[("digest", "md5:00")]), Err(ErrorCode::DigestInvalid)),
            (D256, many.clone(), Ok(PutTarget { tags: many.iter().map(|(_, t)| t.parse().unwrap()).collect(), digest: d(D256) })),
            ("one-more", many, Err(ErrorCode::TagInvalid)),
        ];
        for (raw, query, want) in cases {
            match (put_target(raw, &query), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{raw} {query:?}"),
                (Err(e), Err(code)) => assert_eq!(e.code, code, "{raw} {query:?}: {}", e.message),
                (got, w) => panic!("{raw} {query:?}: got {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn lookups_of_invalid_tags_are_not_found() {
        for raw in ["-bad", "a+b", ".x", &"a".repeat(129)] {
            let e = parse_lookup(raw).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown), "{raw}");
        }
        let e = parse_lookup("sha256:totallywrong").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid));
        assert!(parse_lookup("latest").is_ok());
    }
}
