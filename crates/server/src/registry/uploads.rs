//! Blob uploads: monolithic (`POST ?digest=`), POST then PUT, chunked PATCH with `Content-Range`,
//! status, cancel, and cross-repository mount. Sessions live in the metadata store and their bytes
//! in the blob store, so a push survives a restart and can continue on another replica.
//!
//! A body that fails midway (a reset, or a stalled body ended by the server's body timeout) is a
//! 400 `BLOB_UPLOAD_INVALID`: a PATCH or final PUT keeps the bytes that arrived and answers the
//! session's `Location` and `Range` to resume from; a monolithic `POST ?digest=` discards its
//! session and asks the client to retry. Waiting for body bytes holds no blocking thread (see
//! `berth_blob::fs`).

use axum::body::{Body, HttpBody};
use axum::response::{IntoResponse, Response};
use berth_blob::{BlobError, ByteStream};
use berth_meta::BlobCommit;
use berth_oci::{Digest, ErrorCode, RepoName};
use futures_util::TryStreamExt;
use http::{header, StatusCode};

use super::blobs::parse_digest;
use super::Request;
use crate::error::{ApiError, ApiResult};

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

fn is_empty(body: &Body) -> bool {
    body.size_hint().exact() == Some(0)
}

/// `Range: 0-<last byte>` as distribution sends it (`0-0` for an empty upload).
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn accepted(req: &Request, repo: &RepoName, id: &str, size: u64, status: StatusCode) -> Response {
    (
        status,
        [
            (header::LOCATION, format!("{}/v2/{repo}/blobs/uploads/{id}", req.base)),
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

async fn new_session(req: &Request, repo: &RepoName) -> ApiResult<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Record first, data second: upload data without a record is garbage to `berth gc`.
    req.state.meta.create_upload(&id, repo, now()).await?;
    req.state.blobs.upload_create(&id).await?;
    req.state.metrics.upload_started();
    Ok(id)
}

/// The session's current size, after checking it belongs to `repo`.
async fn session(req: &Request, repo: &RepoName, id: &str) -> ApiResult<u64> {
    match req.state.meta.get_upload(id).await? {
        Some(rec) if &rec.repo == repo => {}
        _ => return Err(ApiError::upload_unknown()),
    }
    req.state.blobs.upload_size(id).await?.ok_or_else(ApiError::upload_unknown)
}

/// Appends the body to a session. If the body fails midway (the client reset the connection, or
/// the server's body timeout ended a stall), the bytes that arrived are kept and the answer is a
/// 400 `BLOB_UPLOAD_INVALID` carrying the session's `Location` and its new `Range`, so the client
/// can resume with a PATCH from there.
async fn append(req: &Request, repo: &RepoName, id: &str, offset: u64, body: Body) -> ApiResult<u64> {
    match req.state.blobs.upload_append(id, offset, stream(body)).await {
        Ok(size) => {
            req.state.metrics.bytes_in(size - offset);
            req.state.meta.touch_upload(id, now()).await?;
            Ok(size)
        }
        Err(BlobError::Body(e)) => {
            let size = req.state.blobs.upload_size(id).await?.unwrap_or(offset);
            req.state.metrics.bytes_in(size.saturating_sub(offset));
            req.state.meta.touch_upload(id, now()).await?;
            tracing::info!(%repo, upload = id, kept = size, error = %e, "upload body failed midway");
            let location = format!("{}/v2/{repo}/blobs/uploads/{id}", req.base);
            let (status, why) = crate::error::body_failure(&e);
            Err(ApiError::new(
                status,
                ErrorCode::BlobUploadInvalid,
                format!("{why}; the upload kept {size} bytes: resume with a PATCH to {location} starting at byte {size}"),
            )
            .with_header(header::LOCATION, location)
            .with_header(header::RANGE, range_value(size)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies and records the upload as a blob of `repo`.
async fn commit(req: &Request, repo: &RepoName, id: &str, digest: &Digest) -> ApiResult {
    let state = &req.state;
    let committed = match state.blobs.upload_commit(id, digest).await {
        Ok(c) => c,
        Err(e @ BlobError::DigestMismatch { .. }) => {
            state.meta.delete_upload(id).await?;
            state.metrics.upload_finished("digest_mismatch");
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    match state.meta.commit_blob(repo, digest, committed.size, &committed.key, now()).await? {
        BlobCommit::Stored => {}
        BlobCommit::AlreadyPresent { .. } => {
            if let Err(e) = state.blobs.delete(&committed.key).await {
                tracing::warn!(error = %e, key = committed.key, "could not delete a duplicate object; gc will");
            }
        }
    }
    state.meta.delete_upload(id).await?;
    state.metrics.upload_finished("committed");
    tracing::info!(%repo, %digest, size = committed.size, subject = %req.caller.subject, "blob pushed");
    Ok(created(req, repo, digest))
}

/// `POST /v2/<name>/blobs/uploads/` (with `?digest=` for a monolithic upload, or
/// `?mount=&from=` for a cross-repository mount).
pub async fn start(req: &Request, repo: &RepoName, body: Body) -> ApiResult {
    let q = req.query();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(mount) = get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = get("from").and_then(|f| f.parse::<RepoName>().ok()) {
            // Mounting reads `from`: the caller must be allowed to pull there.
            if req.caller.allows(from.as_str(), berth_access::Action::Pull)
                && req.state.meta.mount_blob(repo, &from, &digest, now()).await?.is_some()
            {
                tracing::info!(%repo, %from, %digest, "blob mounted");
                return Ok(created(req, repo, &digest));
            }
        }
        // Not mountable: fall back to a normal upload session, as the spec says.
        let id = new_session(req, repo).await?;
        return Ok(accepted(req, repo, &id, 0, StatusCode::ACCEPTED));
    }
    if let Some(d) = get("digest") {
        let digest = parse_digest(d)?;
        let id = new_session(req, repo).await?;
        let result = async {
            match req.state.blobs.upload_append(&id, 0, stream(body)).await {
                Ok(size) => req.state.metrics.bytes_in(size),
                // One request, no session for the client to resume: it must retry.
                Err(BlobError::Body(e)) => {
                    tracing::info!(%repo, error = %e, "monolithic upload body failed midway");
                    let (status, why) = crate::error::body_failure(&e);
                    return Err(ApiError::new(status, ErrorCode::BlobUploadInvalid, format!("{why}; nothing was stored: retry the upload")));
                }
                Err(e) => return Err(e.into()),
            }
            commit(req, repo, &id, &digest).await
        }
        .await;
        if result.is_err() {
            let _ = req.state.blobs.upload_delete(&id).await;
            let _ = req.state.meta.delete_upload(&id).await;
        }
        return result;
    }
    let id = new_session(req, repo).await?;
    Ok(accepted(req, repo, &id, 0, StatusCode::ACCEPTED))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how many bytes arrived.
pub async fn status(req: &Request, repo: &RepoName, id: &str) -> ApiResult {
    let size = session(req, repo, id).await?;
    Ok(accepted(req, repo, id, size, StatusCode::NO_CONTENT))
}

/// `PATCH`: appends a chunk. A `Content-Range` that does not start at the current size is a 416.
pub async fn patch(req: &Request, repo: &RepoName, id: &str, body: Body) -> ApiResult {
    let size = session(req, repo, id).await?;
    let offset = match req.header(header::CONTENT_RANGE) {
        Some(cr) => {
            let start = content_range_start(cr)?;
            if start != size {
                return Err(ApiError::from(BlobError::OutOfOrder { expected: size, got: start }));
            }
            start
        }
        None => size,
    };
    let new_size = append(req, repo, id, offset, body).await?;
    Ok(accepted(req, repo, id, new_size, StatusCode::ACCEPTED))
}

/// `PUT ?digest=`: the optional last chunk, then verification and commit.
pub async fn finish(req: &Request, repo: &RepoName, id: &str, body: Body) -> ApiResult {
    let digest = match req.query_param("digest") {
        Some(d) => parse_digest(&d)?,
        None => return Err(ApiError::digest_invalid("the final PUT of an upload needs ?digest=<digest>")),
    };
    let size = session(req, repo, id).await?;
    if !is_empty(&body) {
        if let Some(cr) = req.header(header::CONTENT_RANGE) {
            let start = content_range_start(cr)?;
            if start != size {
                return Err(ApiError::from(BlobError::OutOfOrder { expected: size, got: start }));
            }
        }
        append(req, repo, id, size, body).await?;
    }
    commit(req, repo, id, &digest).await
}

/// `DELETE`: cancels the upload and frees its bytes.
pub async fn cancel(req: &Request, repo: &RepoName, id: &str) -> ApiResult {
    session(req, repo, id).await?;
    req.state.blobs.upload_delete(id).await?;
    req.state.meta.delete_upload(id).await?;
    req.state.metrics.upload_finished("cancelled");
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
