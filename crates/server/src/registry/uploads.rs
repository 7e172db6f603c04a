//! Blob uploads: monolithic (`POST ?digest=`), POST then PUT, chunked PATCH with `Content-Range`,
//! status, cancel, and cross-repository mount. Sessions live in the metadata store and their bytes
//! in the blob store, so a push survives a restart and can continue on another process.
//!
//! The workflow is `berth_core::registry::uploads`; this file only translates: query parameters
//! and `Content-Range` in, `Location`, `Range` and `Docker-Upload-UUID` out.
//!
//! A body that fails midway (a reset, or a stalled body ended by the server's body timeout) is a
//! 400 `BLOB_UPLOAD_INVALID` (408 when too slow): a PATCH or final PUT keeps the bytes that
//! arrived and answers the session's `Location` and `Range` to resume from; a monolithic
//! `POST ?digest=` discards its session and asks the client to retry. Waiting for body bytes
//! holds no blocking thread (see `berth_blob::fs`).

use axum::body::{Body, HttpBody};
use axum::response::{IntoResponse, Response};
use berth_blob::ByteStream;
use berth_core::Error as CoreError;
use berth_oci::{Digest, ErrorCode, RepoName};
use futures_util::TryStreamExt;
use http::{header, StatusCode};

use super::blobs::parse_digest;
use super::Request;
use crate::error::{range_value, ApiError, ApiResult};

fn stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

fn is_empty(body: &Body) -> bool {
    body.size_hint().exact() == Some(0)
}

fn location(req: &Request, repo: &RepoName, id: &str) -> String {
    format!("{}/v2/{repo}/blobs/uploads/{id}", req.base)
}

fn accepted(req: &Request, repo: &RepoName, id: &str, size: u64, status: StatusCode) -> Response {
    (
        status,
        [
            (header::LOCATION, location(req, repo, id)),
            (header::RANGE, range_value(size)),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (header::HeaderName::from_static("docker-upload-uuid"), id.to_owned()),
        ],
    )
        .into_response()
}

fn created(req: &Request, repo: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("{}/v2/{repo}/blobs/{digest}", req.base)),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (header::HeaderName::from_static("docker-content-digest"), digest.to_string()),
        ],
    )
        .into_response()
}

/// The start offset of a `Content-Range` (`<start>-<end>`, optionally with a `bytes ` prefix).
fn content_range_start(value: &str) -> ApiResult<u64> {
    let v = value.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v).trim();
    let start = v.split(['-', '/']).next().unwrap_or("");
    start.parse::<u64>().map_err(|_| {
        ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::BlobUploadInvalid, format!("malformed Content-Range {value:?}; use <start>-<end>"))
    })
}

/// Where a chunk must start, if the request says (`Content-Range`).
fn expected_offset(req: &Request) -> ApiResult<Option<u64>> {
    req.header(header::CONTENT_RANGE).map(content_range_start).transpose()
}

/// An upload error as a response; a failed body that kept bytes also says where the session is
/// (`Location`, with the `Range` it holds), so the client can resume with a PATCH from there.
fn upload_error(req: &Request, repo: &RepoName, id: &str, e: CoreError) -> ApiError {
    let resumable = matches!(e, CoreError::BodyFailed { kept: Some(_), .. });
    let out = ApiError::from(e);
    if resumable {
        out.with_header(header::LOCATION, location(req, repo, id))
    } else {
        out
    }
}

/// `POST /v2/<name>/blobs/uploads/` (with `?digest=` for a monolithic upload, or
/// `?mount=&from=` for a cross-repository mount).
pub async fn start(req: &Request, repo: &RepoName, body: Body) -> ApiResult {
    let core = &req.state.core;
    let q = req.query();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(mount) = get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = get("from").and_then(|f| f.parse::<RepoName>().ok()) {
            if core.upload_mount(&req.caller, repo, &from, &digest).await? {
                return Ok(created(req, repo, &digest));
            }
        }
        // Not mountable: fall back to a normal upload session, as the spec says.
        let id = core.upload_start(repo).await?;
        return Ok(accepted(req, repo, &id, 0, StatusCode::ACCEPTED));
    }
    if let Some(d) = get("digest") {
        let digest = parse_digest(d)?;
        core.upload_monolithic(&req.caller, repo, &digest, stream(body)).await?;
        return Ok(created(req, repo, &digest));
    }
    let id = core.upload_start(repo).await?;
    Ok(accepted(req, repo, &id, 0, StatusCode::ACCEPTED))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how many bytes arrived.
pub async fn status(req: &Request, repo: &RepoName, id: &str) -> ApiResult {
    let size = req.state.core.upload_status(repo, id).await?;
    Ok(accepted(req, repo, id, size, StatusCode::NO_CONTENT))
}

/// `PATCH`: appends a chunk. A `Content-Range` that does not start at the current size is a 416.
pub async fn patch(req: &Request, repo: &RepoName, id: &str, body: Body) -> ApiResult {
    let expected = expected_offset(req)?;
    let size = req.state.core.upload_append(repo, id, expected, stream(body)).await.map_err(|e| upload_error(req, repo, id, e))?;
    Ok(accepted(req, repo, id, size, StatusCode::ACCEPTED))
}

/// `PUT ?digest=`: the optional last chunk, then verification and commit.
pub async fn finish(req: &Request, repo: &RepoName, id: &str, body: Body) -> ApiResult {
    let digest = match req.query_param("digest") {
        Some(d) => parse_digest(&d)?,
        None => return Err(ApiError::digest_invalid("the final PUT of an upload needs ?digest=<digest>")),
    };
    let (expected, body) = if is_empty(&body) { (None, None) } else { (expected_offset(req)?, Some(stream(body))) };
    req.state.core.upload_finish(&req.caller, repo, id, &digest, expected, body).await.map_err(|e| upload_error(req, repo, id, e))?;
    Ok(created(req, repo, &digest))
}

/// `DELETE`: cancels the upload and frees its bytes.
pub async fn cancel(req: &Request, repo: &RepoName, id: &str) -> ApiResult {
    req.state.core.upload_cancel(repo, id).await?;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        assert_eq!(content_range_start("0-99").unwrap(), 0);
        assert_eq!(content_range_start("100-199").unwrap(), 100);
        assert_eq!(content_range_start("bytes 100-199/*").unwrap(), 100);
        assert_eq!(content_range_start("bytes 5-9/10").unwrap(), 5);
        assert!(content_range_start("x-1").is_err());
        assert!(content_range_start("").is_err());
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(10), "0-9");
    }
}
