//! Assertions on registry responses. Each returns an error that says what was expected and
//! what came back, which becomes the failed check's reason.

use anyhow::{anyhow, bail, ensure};

use crate::client::Response;

/// The error codes the distribution-spec defines.
pub(crate) const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// The status is one of `expected`.
pub(crate) fn status(resp: &Response, expected: &[u16]) -> anyhow::Result<()> {
    if expected.contains(&resp.status) {
        return Ok(());
    }
    let want = expected
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let body = resp.body_snippet(240);
    if body.is_empty() {
        bail!(
            "{} {}: expected {want}, got {}",
            resp.method,
            resp.url.path(),
            resp.status
        )
    }
    bail!(
        "{} {}: expected {want}, got {} ({body})",
        resp.method,
        resp.url.path(),
        resp.status
    )
}

/// A header that must be present; returns its value.
pub(crate) fn header<'a>(resp: &'a Response, name: &str) -> anyhow::Result<&'a str> {
    resp.header(name).ok_or_else(|| {
        anyhow!(
            "{} {} answered {} without a {name} header",
            resp.method,
            resp.url.path(),
            resp.status
        )
    })
}

/// A header that must be present with exactly `value`.
pub(crate) fn header_is(resp: &Response, name: &str, value: &str) -> anyhow::Result<()> {
    let got = header(resp, name)?;
    ensure!(
        got == value,
        "{} {}: header {name} is {got:?}, expected {value:?}",
        resp.method,
        resp.url.path()
    );
    Ok(())
}

/// `Docker-Content-Digest` is optional, but when present it must name the content.
pub(crate) fn digest_header_if_present(resp: &Response, digest: &str) -> anyhow::Result<()> {
    if let Some(got) = resp.header("docker-content-digest") {
        ensure!(
            got == digest,
            "{} {}: Docker-Content-Digest is {got:?}, expected {digest:?}",
            resp.method,
            resp.url.path()
        );
    }
    Ok(())
}

pub(crate) fn content_length_is(resp: &Response, n: usize) -> anyhow::Result<()> {
    let got = header(resp, "content-length")?;
    ensure!(
        got.trim() == n.to_string(),
        "{} {}: Content-Length is {got}, expected {n}",
        resp.method,
        resp.url.path()
    );
    Ok(())
}

/// The body is exactly `expected`.
pub(crate) fn body_is(resp: &Response, expected: &[u8]) -> anyhow::Result<()> {
    if resp.body == expected {
        return Ok(());
    }
    if let Some(e) = &resp.body_error {
        bail!(
            "{} {}: the body broke off after {} of {} bytes ({e})",
            resp.method,
            resp.url.path(),
            resp.body.len(),
            expected.len()
        );
    }
    bail!(
        "{} {}: body differs from what was pushed ({} bytes received, {} expected)",
        resp.method,
        resp.url.path(),
        resp.body.len(),
        expected.len()
    )
}

/// The body is empty (HEAD answers).
pub(crate) fn body_empty(resp: &Response) -> anyhow::Result<()> {
    ensure!(
        resp.body.is_empty(),
        "{} {}: expected no body, got {} bytes",
        resp.method,
        resp.url.path(),
        resp.body.len()
    );
    Ok(())
}

/// The `Content-Type` names `media_type` (parameters ignored).
pub(crate) fn content_type_is(resp: &Response, media_type: &str) -> anyhow::Result<()> {
    let got = header(resp, "content-type")?;
    let base = got.split(';').next().unwrap_or("").trim();
    ensure!(
        base.eq_ignore_ascii_case(media_type),
        "{} {}: Content-Type is {got:?}, expected {media_type:?}",
        resp.method,
        resp.url.path()
    );
    Ok(())
}

/// Parses the spec's error body `{"errors":[{"code":..,"message":..,"detail":..}]}` and returns
/// the codes. Each entry must have a string `code`; `message`, when present, must be a string.
pub(crate) fn error_codes(resp: &Response) -> anyhow::Result<Vec<String>> {
    let what = format!("{} {} ({})", resp.method, resp.url.path(), resp.status);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|_| {
        anyhow!(
            "{what}: error body is not JSON of the form {{\"errors\":[{{\"code\":..,\"message\":..}}]}}: {:?}",
            resp.body_snippet(160)
        )
    })?;
    let errors = v.get("errors").and_then(|e| e.as_array()).ok_or_else(|| {
        anyhow!(
            "{what}: error body has no \"errors\" array: {}",
            resp.body_snippet(160)
        )
    })?;
    ensure!(
        !errors.is_empty(),
        "{what}: error body has an empty \"errors\" array"
    );
    let mut codes = Vec::new();
    for e in errors {
        let code = e
            .get("code")
            .and_then(|c| c.as_str())
            .ok_or_else(|| anyhow!("{what}: an error entry has no string \"code\": {e}"))?;
        if let Some(m) = e.get("message") {
            ensure!(
                m.is_string(),
                "{what}: error \"message\" is not a string: {e}"
            );
        }
        codes.push(code.to_string());
    }
    Ok(codes)
}

/// The error body is in the spec's form and contains `code`.
pub(crate) fn error_code(resp: &Response, code: &str) -> anyhow::Result<()> {
    error_code_any(resp, &[code])
}

/// The error body is in the spec's form and contains one of `codes`.
pub(crate) fn error_code_any(resp: &Response, codes: &[&str]) -> anyhow::Result<()> {
    let got = error_codes(resp)?;
    ensure!(
        got.iter().any(|g| codes.contains(&g.as_str())),
        "{} {}: error codes {got:?}, expected {}",
        resp.method,
        resp.url.path(),
        codes.join(" or ")
    );
    Ok(())
}

/// The error body is in the spec's form and its first code is one the spec defines.
pub(crate) fn error_code_known(resp: &Response) -> anyhow::Result<String> {
    let got = error_codes(resp)?;
    let first = got.first().cloned().unwrap_or_default();
    ensure!(
        SPEC_ERROR_CODES.contains(&first.as_str()),
        "{} {}: error code {first:?} is not one the spec defines",
        resp.method,
        resp.url.path()
    );
    Ok(first)
}

/// Status and error code together: the usual shape of an error check.
pub(crate) fn spec_error(
    resp: &Response,
    expected_status: &[u16],
    code: &str,
) -> anyhow::Result<()> {
    status(resp, expected_status)?;
    error_code(resp, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use reqwest::{Method, Url};

    fn resp(status: u16, body: &str) -> Response {
        Response {
            method: Method::GET,
            url: Url::parse("http://127.0.0.1/v2/x/blobs/y").expect("url"),
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            body_error: None,
        }
    }

    #[test]
    fn error_bodies() {
        let ok = resp(
            404,
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":"x"}]}"#,
        );
        assert!(spec_error(&ok, &[404], "BLOB_UNKNOWN").is_ok());
        assert!(error_code(&ok, "MANIFEST_UNKNOWN").is_err());
        assert!(error_codes(&resp(404, "404 page not found")).is_err());
        assert!(error_codes(&resp(404, r#"{"errors":[]}"#)).is_err());
        assert!(error_codes(&resp(404, r#"{"errors":[{"message":"x"}]}"#)).is_err());
        assert!(error_code_known(&resp(400, r#"{"errors":[{"code":"WHATEVER"}]}"#)).is_err());
        let no_message = resp(400, r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
        assert_eq!(
            error_code_known(&no_message).ok().as_deref(),
            Some("DIGEST_INVALID")
        );
    }

    #[test]
    fn status_message_names_both() {
        let e = status(&resp(500, "boom"), &[200, 206]).expect_err("must fail");
        let msg = format!("{e}");
        assert!(msg.contains("expected 200 or 206, got 500"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }
}
