//! Blob GET/HEAD (with `Range`) and DELETE.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName};
use http::{header, StatusCode};

use super::Request;
use crate::error::{ApiError, ApiResult};

pub(crate) fn parse_digest(raw: &str) -> ApiResult<Digest> {
    raw.parse::<Digest>().map_err(|e| ApiError::digest_invalid(e.to_string()))
}

/// A parsed `Range: bytes=...` header against an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeReq {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

pub(crate) fn parse_range(value: Option<&str>, size: u64) -> RangeReq {
    let Some(v) = value else { return RangeReq::Whole };
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return RangeReq::Whole };
    if spec.contains(',') {
        // Multiple ranges: serve the whole object, which RFC 9110 allows.
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeReq::Whole };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else { return RangeReq::Whole };
            let end = if b.is_empty() { size.saturating_sub(1) } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeReq::Whole,
                }
            };
            (start, end)
        }
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else { return RangeReq::Whole };
            if n == 0 {
                return RangeReq::Unsatisfiable;
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (true, true) => return RangeReq::Whole,
    };
    if size == 0 || start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end)
}

pub async fn get(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let digest = parse_digest(raw)?;
    let state = &req.state;
    let record = state.core.stat_blob(repo, &digest).await?;
    let size = record.size;
    let range = parse_range(req.header(header::RANGE), size);
    let common = |b: http::response::Builder| {
        b.header(header::CONTENT_TYPE, "application/octet-stream")
            .header("docker-content-digest", digest.as_str())
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, format!("\"{digest}\""))
    };
    let (status, span) = match range {
        RangeReq::Unsatisfiable => {
            return Err(ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, berth_oci::ErrorCode::BlobUnknown, format!("range not satisfiable for a blob of {size} bytes"))
                .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        RangeReq::Whole => (StatusCode::OK, None),
        RangeReq::Part(s, e) => (StatusCode::PARTIAL_CONTENT, Some((s, e))),
    };
    let len = span.map(|(s, e)| e - s + 1).unwrap_or(size);
    let mut b = common(Response::builder().status(status)).header(header::CONTENT_LENGTH, len);
    if let Some((s, e)) = span {
        b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
    }
    if req.method == http::Method::HEAD {
        return b.body(Body::empty()).map_err(|e| ApiError::internal("building a response", e));
    }
    // storage.redirect: the client fetches the bytes from the store (its Range header too).
    if let Some(url) = state.core.blob_redirect(&record).await? {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url)
            .header("docker-content-digest", digest.as_str())
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty())
            .map_err(|e| ApiError::internal("building a response", e));
    }
    let reader = state.core.open_blob(&record, span).await?;
    b.body(Body::from_stream(reader.body)).map_err(|e| ApiError::internal("building a response", e))
}

pub async fn delete(req: &Request, repo: &RepoName, raw: &str) -> ApiResult {
    let digest = parse_digest(raw)?;
    req.state.core.delete_blob(&req.caller, repo, &digest).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table() {
        use RangeReq::*;
        let cases: &[(Option<&str>, u64, RangeReq)] = &[
            (None, 10, Whole),
            (Some("bytes=0-0"), 10, Part(0, 0)),
            (Some("bytes=0-9"), 10, Part(0, 9)),
            (Some("bytes=2-"), 10, Part(2, 9)),
            (Some("bytes=5-100"), 10, Part(5, 9)),
            (Some("bytes=-3"), 10, Part(7, 9)),
            (Some("bytes=-30"), 10, Part(0, 9)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Whole),
            (Some("bytes=a-b"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=0-1,3-4"), 10, Whole),
        ];
        for (h, size, want) in cases {
            assert_eq!(&parse_range(*h, *size), want, "{h:?} of {size}");
        }
    }
}
