//! S3 blob store: uploads are objects under `<prefix>uploads/<id>/`, completed objects live under
//! `<prefix>blobs/<alg>/<xx>/<hex>/<unique>`, and completing an upload assembles its pieces
//! into the final object with one atomic S3 operation (a put, a copy, or a multipart upload's
//! completion). It runs the backend-independent suite in full (`tests/s3_suite.rs`).
//!
//! # The crate: the AWS SDK (`aws-sdk-s3` + `aws-config`), not `object_store`
//!
//! Both stream in both directions, do multipart uploads, take a custom endpoint with path-style
//! addressing, and find credentials in the environment, web identity (IRSA) and instance
//! metadata. What decided it:
//! - **UploadPartCopy.** Completing an upload whose pieces are large copies them server-side
//!   into the final object (`UploadPartCopy` with a byte range). `object_store` has no part copy
//!   (its `copy` is one `CopyObject`, limited to 5 GiB): every completion of a large upload
//!   written in several requests would download and upload it again through Berth.
//! - **Conditional writes** (`If-None-Match: *` on `PutObject` and
//!   `CompleteMultipartUpload`), which close the race of a write whose claim was lost (below).
//! - **Credentials**: the SDK's chain is the one every AWS tool follows (env, `AWS_PROFILE`
//!   with static keys, assume-role or a credential process, web identity / IRSA, EKS Pod
//!   Identity and ECS container credentials, instance metadata, STS regions); `object_store`
//!   reads no profile. Presigned URLs (for the planned `storage.redirect`) come with it too.
//! - **Errors** carry S3's codes (`AccessDenied`, `NoSuchBucket`, `PreconditionFailed`) and
//!   HTTP status, which the start-up check turns into one line naming the missing permission.
//!
//! The price is compile time: the SDK is big generated code. It is kept down by
//! `default-features = false` (no SigV4a, no legacy hyper 0.14 client, no SSO): the HTTP client
//! is hyper 1 + rustls on aws-lc-rs, which the workspace already builds for its own TLS and
//! JWTs. A clean build of the SDK's crates took about 5 minutes on the 2-core machine (dev
//! profile, dependencies at `opt-level = 2`), once; incremental builds do not rebuild them.
//!
//! The client computes no CRC checksums unless an operation requires one (`WhenRequired`: the
//! default `WhenSupported` sends `aws-chunked` bodies that many S3-compatible servers refuse).
//! Over HTTPS bodies are sent with `UNSIGNED-PAYLOAD` (TLS protects them, and SigV4 would hash
//! every byte once more on an async worker); over plain HTTP (tests only) they are signed.
//!
//! # How writes map to objects
//!
//! A core *part* (one PATCH, a monolithic body, the final chunk) is written from its offset
//! `O` as the object `uploads/<id>/<O, 20 digits>` (a "piece"). Keying pieces by offset, not by
//! part number, makes the trait's rule literal: a write at `O` deletes every piece at or past
//! `O` and puts its own at `O`; the pieces, sorted by offset, *overlay* (a piece covers from its
//! offset to its end or to the next piece's offset, whichever comes first); the upload holds the
//! bytes the overlay covers without a gap from 0. So the listing of `uploads/<id>/` alone says
//! how many bytes are stored (`OutOfOrder`, `SizeMismatch`) and where each byte is, with no
//! state in any process: a write on one replica and the next on another just work. The part
//! number is not needed (pieces sort by offset); the caller's numbering is logged only.
//!
//! A piece is streamed in: up to 8 MiB (`PART`) it is one `PutObject`; past that it is a
//! multipart upload of 8 MiB parts (S3 wants ≥ 5 MiB except the last), one part filling from the
//! body while the previous one is hashed (a short `spawn_blocking` job) and sent, so at most two
//! parts (16 MiB) of a write are in memory, and receiving, hashing and sending overlap. A piece
//! that reaches 10,000 parts is completed and the write goes on as the next piece. The caller's
//! hasher takes each part's bytes just before they are sent, so it matches what is stored. A
//! body that fails midway stores what arrived (the buffered rest as the last part) and reports
//! it. An error of S3 fails the write (nothing counts); its multipart upload is aborted, also
//! when the request is dropped mid-write (a background abort). Small pieces are fine as objects:
//! clients' chunk sizes never meet S3's 5 MiB rule here.
//!
//! Pieces are created with `If-None-Match: *`. A write whose claim was lost (its process stalled
//! past the lease) may still be sending when the next write of the same offset starts; without
//! the condition its late `PutObject` would silently replace the recorded write's bytes, and the
//! object completed later would not hold the bytes the hasher saw. With it, the late write fails
//! (412) because the recorded piece exists; and if the late piece landed first, the next write
//! deletes it before creating its own (a late piece landing between that delete and the create
//! makes the create fail: the client retries, and the retry deletes it).
//!
//! # Completion
//!
//! `upload_complete` lists the pieces, takes the overlay's first `size` bytes as segments and
//! writes the object under a fresh key in one atomic operation (nothing partial is ever visible
//! under a final key, and a crash leaves only upload pieces, which the sweep aborts):
//! - 0 bytes: an empty `PutObject`;
//! - one whole piece of at most 512 MiB: `CopyObject` (server-side);
//! - at most 8 MiB in all: the segments are read (ranged GETs) and put as one object;
//! - else a multipart upload planned by `plan`: each stretch of a segment of at least 5 MiB is
//!   copied server-side with `UploadPartCopy` (in pieces of at most 512 MiB, so large copies run
//!   in parallel), and the short segments between them are read and sent again, gathered into
//!   8 MiB parts (only the last part may be shorter). Three part jobs run at once (at most
//!   three 8 MiB buffers). So a docker push (one big PATCH) is copied server-side only, while an
//!   upload sent in many small chunks is read back once at completion (the bytes of its short
//!   pieces; its pieces of 5 MiB and more are copied).
//!
//! Then the upload's objects are deleted. The completed object's `LastModified` is the
//! completion's time (a multipart object's is its initiation, which the completion starts), so
//! the orphan sweep's age is right.
//!
//! # Other primitives
//!
//! `upload_create` puts an empty marker `uploads/<id>/upload` (after deleting the objects the id
//! held; ids are fresh, so this is normally one empty listing); a write or completion without
//! the marker is `UploadUnknown`. `upload_abort` deletes every object under the upload's prefix
//! (the marker first) and aborts the multipart uploads in progress there.
//! `list_uploads` streams the upload prefixes (`ListObjectsV2` with a delimiter, page by page),
//! then the ids of multipart uploads in progress that have no object (a dropped write's, whose
//! background abort did not happen), so the sweep aborts those too. Operators should still set
//! the bucket lifecycle rule `AbortIncompleteMultipartUpload` (a few days) as a backstop.
//! `open` is a ranged `GetObject` streamed as it arrives; `list_objects` pages through
//! `ListObjectsV2` under `blobs/` and filters by `LastModified`.
//!
//! Costs: a write lists its upload's pieces (one request per 1,000 pieces), so an upload sent in
//! thousands of tiny chunks pays a few listing requests per chunk; ids and keys are checked
//! before any request. No state that matters is kept in the process.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use berth_oci::{Digest, ResumableHasher};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};

use crate::{valid_id, valid_key, BlobError, BlobStore, ByteStream, Committed, NameStream, ObjectReader, PartWritten, Result};

/// Size of the parts a write sends (and of the parts a completion gathers short segments into).
const PART: usize = 8 << 20;
/// S3's minimum size of a multipart upload's part, except the last.
const MIN_PART: u64 = 5 << 20;
/// S3's maximum number of parts of a multipart upload.
const MAX_PARTS: usize = 10_000;
/// Largest range one `UploadPartCopy` copies (S3 allows 5 GiB; smaller pieces run in parallel).
const COPY_PIECE: u64 = 512 << 20;
/// Largest single piece a completion copies with one `CopyObject`.
const COPY_OBJECT_MAX: u64 = 512 << 20;
/// Part jobs (copies, gathers) of one completion running at once.
const ASSEMBLY_JOBS: usize = 3;
/// Keys per `DeleteObjects` request (S3's maximum).
const DELETE_BATCH: usize = 1000;
/// Name of an upload's marker object.
const MARKER: &str = "upload";

/// Where and how to reach the bucket.
#[derive(Clone, Default)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket ("" for the whole bucket; slashes at the ends are ignored).
    pub prefix: String,
    /// Region; else `AWS_REGION` / the profile / instance metadata; else `us-east-1` (what most
    /// S3-compatible servers accept).
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible server (`https://minio.internal:9000`); AWS when unset.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need;
    /// else virtual-hosted (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Static credentials; when unset, the SDK's chain (env `AWS_ACCESS_KEY_ID`..., `AWS_PROFILE`,
    /// web identity / IRSA, container credentials, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow a plain `http://` endpoint (tests on 127.0.0.1; never for real data).
    pub allow_http: bool,
    /// Certificates (PEM) of CAs trusted for the endpoint besides the system's roots, for an
    /// S3-compatible server with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl S3Options {
    /// Options for `bucket` with every other field at its default.
    pub fn new(bucket: impl Into<String>) -> S3Options {
        S3Options { bucket: bucket.into(), ..S3Options::default() }
    }

    /// Options from a storage URL: `s3://bucket[/prefix][?region=R&endpoint=URL&path_style=true&allow_http=true]`.
    /// Credentials never go in the URL (it is logged and shown by `berth config`): they come
    /// from the SDK's chain or the configuration's own fields.
    pub fn from_url(text: &str) -> Result<S3Options, S3SetupError> {
        let bad = |why: String| S3SetupError(format!("storage URL {}: {why}", redact_query(text)));
        let url = url::Url::parse(text).map_err(|e| bad(format!("not a URL ({e}); write s3://bucket/prefix?region=...")))?;
        if url.scheme() != "s3" {
            return Err(bad("the scheme must be s3://".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, \
                 web identity) or storage.access_key_id / storage.secret_access_key in the configuration file"
                    .into(),
            ));
        }
        if url.port().is_some() {
            return Err(bad("the part after s3:// is the bucket name; give the server as ?endpoint=https://host:port".into()));
        }
        let bucket = url.host_str().unwrap_or("").to_owned();
        if bucket.is_empty() {
            return Err(bad("no bucket: write s3://bucket/prefix".into()));
        }
        if url.fragment().is_some() {
            return Err(bad("a URL fragment (#...) means nothing here".into()));
        }
        let prefix = percent_encoding::percent_decode_str(url.path().trim_matches('/'))
            .decode_utf8()
            .map_err(|_| bad("the prefix is not UTF-8 once decoded".into()))?
            .into_owned();
        let mut options = S3Options::new(bucket);
        options.prefix = prefix;
        let flag = |key: &str, value: &str| match value {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(bad(format!("{key}={value:?}: write true or false"))),
        };
        let mut seen = Vec::new();
        for (key, value) in url.query_pairs() {
            if seen.contains(&key) {
                return Err(bad(format!("{key} is given twice")));
            }
            match &*key {
                "region" => options.region = Some(value.to_string()).filter(|v| !v.is_empty()),
                "endpoint" => options.endpoint = Some(value.to_string()).filter(|v| !v.is_empty()),
                "path_style" => options.path_style = flag(&key, &value)?,
                "allow_http" => options.allow_http = flag(&key, &value)?,
                _ => return Err(bad(format!("unknown parameter {key:?}; known: region, endpoint, path_style, allow_http"))),
            }
            seen.push(key);
        }
        Ok(options)
    }
}

/// The URL up to its query, for messages about a URL that may not parse (no secrets belong in
/// it, but a mistaken one should not be repeated into logs).
fn redact_query(text: &str) -> String {
    let head = text.split(['?', '#']).next().unwrap_or("");
    match head.split_once('@') {
        Some((scheme_user, host)) => format!("{}<redacted>@{host}", &scheme_user[..scheme_user.find("://").map_or(0, |i| i + 3)]),
        None => head.to_owned(),
    }
}


impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// Why the store could not be set up, in one line (bucket, endpoint and the missing permission
/// or the unreachable server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3SetupError(pub String);

impl fmt::Display for S3SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for S3SetupError {}

/// A [`BlobStore`] on an S3 bucket (AWS or S3-compatible). Cheap to clone; every clone, and
/// every process on the same bucket and prefix, shares the same uploads and objects.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: Arc<str>,
    /// `""` or `"<prefix>/"`.
    prefix: Arc<str>,
    /// Where the store is, for messages: `s3://bucket/prefix at endpoint`.
    place: Arc<str>,
    /// Sign payloads (plain HTTP only; over HTTPS they are `UNSIGNED-PAYLOAD`).
    sign_payloads: bool,
    /// Keys per listing page.
    page_size: i32,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("place", &self.place).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Sets up the client and checks the bucket: reachable, existing, and every permission the
    /// store needs granted (see [`S3Store::check`]).
    pub async fn connect(options: S3Options) -> Result<S3Store, S3SetupError> {
        let store = S3Store::new(options).await?;
        store.check().await?;
        Ok(store)
    }

    /// Sets up the client without a request to the bucket.
    pub async fn new(options: S3Options) -> Result<S3Store, S3SetupError> {
        let S3Options { bucket, prefix, region, endpoint, path_style, access_key_id, secret_access_key, session_token, allow_http, ca_pem } = options;
        if bucket.is_empty() {
            return Err(S3SetupError("S3 blob store: no bucket given".into()));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let place = match &endpoint {
            Some(e) => format!("s3://{bucket}/{prefix} at {e}"),
            None => format!("s3://{bucket}/{prefix}"),
        };
        let mut sign_payloads = false;
        if let Some(e) = &endpoint {
            let lower = e.to_ascii_lowercase();
            if lower.starts_with("http://") {
                if !allow_http {
                    return Err(S3SetupError(format!("{place}: the endpoint is plain HTTP; use https, or allow_http for a test server")));
                }
                sign_payloads = true;
            } else if !lower.starts_with("https://") {
                return Err(S3SetupError(format!("{place}: the endpoint must be an http(s):// URL")));
            }
        }
        let credentials = match (access_key_id, secret_access_key) {
            (Some(id), Some(secret)) => Some(Credentials::new(id, secret, session_token, None, "berth-configuration")),
            (None, None) => None,
            _ => return Err(S3SetupError(format!("{place}: give both the access key id and the secret access key, or neither"))),
        };
        let region_chain = aws_config::meta::region::RegionProviderChain::first_try(region.map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region_chain)
            .timeout_config(aws_config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build());
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        if let Some(pem) = ca_pem {
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(S3SetupError(format!("{place}: the endpoint's CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
            }
            use aws_smithy_http_client::tls;
            let trust = tls::TrustStore::default().with_pem_certificate(pem);
            let context = tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .map_err(|e| S3SetupError(format!("{place}: the endpoint's CA: {e}")))?;
            let client = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context)
                .build_https();
            loader = loader.http_client(client);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &endpoint {
            config = config.endpoint_url(e.trim_end_matches('/'));
        }
        Ok(S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.into(),
            prefix: prefix.into(),
            place: place.into(),
            sign_payloads,
            page_size: 1000,
        })
    }

    /// Lists at most `n` keys per request (1 to 1000; tests use small pages to see paging).
    pub fn with_list_page_size(mut self, n: i32) -> S3Store {
        self.page_size = n.clamp(1, 1000);
        self
    }

    /// Checks that the bucket can be reached and exists, and that the credentials may do what
    /// the store does under its prefix: `s3:ListBucket`, `s3:PutObject`, `s3:GetObject`,
    /// `s3:DeleteObject`, `s3:ListBucketMultipartUploads`, `s3:AbortMultipartUpload` (one probe
    /// object and one probe multipart upload, both removed). The error is one line that names
    /// every missing permission, or why the bucket cannot be used.
    pub async fn check(&self) -> Result<(), S3SetupError> {
        let place = &self.place;
        if let Err(e) = self.client.head_bucket().bucket(&*self.bucket).send().await {
            let status = e.raw_response().map(|r| r.status().as_u16());
            return Err(S3SetupError(match status {
                // No answer: unreachable, or no request could be signed (no credentials found).
                None => format!("{place}: cannot reach the S3 server or sign a request to it: {}", sdk_message(&e)),
                Some(404) => format!("{place}: the bucket does not exist"),
                Some(403) => format!("{place}: access denied to the bucket (the credentials lack s3:ListBucket on it, or are not valid)"),
                Some(301) => format!("{place}: the bucket is in another region than the one configured"),
                Some(s) => format!("{place}: the bucket cannot be used (HTTP {s}): {}", sdk_message(&e)),
            }));
        }
        let mut missing: Vec<&str> = Vec::new();
        let mut other: Vec<String> = Vec::new();
        let mut judge = |permission: &'static str, result: Result<(), (Option<u16>, Option<String>, String)>| match result {
            Ok(()) => {}
            Err((Some(403), _, _)) => missing.push(permission),
            Err((_, code, message)) => other.push(format!("{permission}: {}", code.unwrap_or(message))),
        };
        let probe = format!("{}_berth_check/{}", self.prefix, uuid::Uuid::new_v4().simple());
        judge("s3:ListBucket", failure(self.client.list_objects_v2().bucket(&*self.bucket).prefix(&*self.prefix).max_keys(1).send().await));
        let put = failure(self.client.put_object().bucket(&*self.bucket).key(&probe).body(S3Body::from_static(b"berth")).send().await);
        let put_ok = put.is_ok();
        judge("s3:PutObject", put);
        if put_ok {
            judge("s3:GetObject", failure(self.client.get_object().bucket(&*self.bucket).key(&probe).send().await));
            judge("s3:DeleteObject", failure(self.client.delete_object().bucket(&*self.bucket).key(&probe).send().await));
        }
        judge(
            "s3:ListBucketMultipartUploads",
            failure(self.client.list_multipart_uploads().bucket(&*self.bucket).prefix(&*self.prefix).max_uploads(1).send().await),
        );
        if put_ok {
            match self.client.create_multipart_upload().bucket(&*self.bucket).key(&probe).send().await {
                Ok(out) => {
                    let id = out.upload_id().unwrap_or_default();
                    judge("s3:AbortMultipartUpload", failure(self.client.abort_multipart_upload().bucket(&*self.bucket).key(&probe).upload_id(id).send().await));
                }
                Err(e) => judge("s3:PutObject (CreateMultipartUpload)", failure::<(), _>(Err(e))),
            }
        }
        if missing.is_empty() && other.is_empty() {
            return Ok(());
        }
        let mut line = format!("{place}:");
        if !missing.is_empty() {
            line.push_str(&format!(" the credentials lack {} (AccessDenied)", missing.join(", ")));
        }
        if !other.is_empty() {
            line.push_str(&format!("{} failed: {}", if missing.is_empty() { "" } else { ";" }, other.join("; ")));
        }
        Err(S3SetupError(line))
    }

    fn upload_prefix(&self, id: &str) -> String {
        format!("{}uploads/{id}/", self.prefix)
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}blobs/{key}", self.prefix)
    }

    fn io_error<E>(&self, op: &str, key: &str, e: SdkError<E>) -> BlobError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let message = format!("S3 {op} {}/{key}: {}", self.bucket, sdk_message(&e));
        match status(&e) {
            // No answer (after the SDK's retries with backoff), or the service says it cannot.
            None | Some(500..=599) => BlobError::Unavailable(message),
            Some(_) => BlobError::Io(io::Error::other(message)),
        }
    }

    /// Every object under upload `id`'s prefix, page by page.
    async fn layout(&self, id: &str) -> Result<Layout> {
        let prefix = self.upload_prefix(id);
        let mut layout = Layout::default();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&*self.bucket)
                .prefix(&prefix)
                .max_keys(self.page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.io_error("ListObjectsV2", &prefix, e))?;
            for object in out.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&prefix) else { continue };
                if name == MARKER {
                    layout.exists = true;
                } else if let Some(start) = parse_offset(name) {
                    let size = u64::try_from(object.size().unwrap_or(0)).unwrap_or(0);
                    layout.pieces.push(Piece { start, size, key: key.to_owned() });
                }
                layout.keys.push(key.to_owned());
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        layout.pieces.sort_by_key(|p| p.start);
        Ok(layout)
    }

    /// Deletes keys, `DELETE_BATCH` per request.
    async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| BlobError::Io(io::Error::other(e)))?;
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| BlobError::Io(io::Error::other(e)))?;
            let out = self.client.delete_objects().bucket(&*self.bucket).delete(delete).send().await.map_err(|e| self.io_error("DeleteObjects", &batch[0], e))?;
            if let Some(e) = out.errors().first() {
                return Err(BlobError::Io(io::Error::other(format!(
                    "S3 DeleteObjects {}/{}: {} ({} keys not deleted)",
                    self.bucket,
                    e.key().unwrap_or_default(),
                    e.code().unwrap_or_default(),
                    out.errors().len()
                ))));
            }
        }
        Ok(())
    }

    /// Aborts the multipart uploads in progress under `prefix`.
    async fn abort_multipart_under(&self, prefix: &str) -> Result<()> {
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&*self.bucket)
                .prefix(prefix)
                .max_uploads(self.page_size)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.io_error("ListMultipartUploads", prefix, e))?;
            for upload in out.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                if !key.starts_with(prefix) {
                    continue;
                }
                match self.client.abort_multipart_upload().bucket(&*self.bucket).key(key).upload_id(id).send().await {
                    Ok(_) => {}
                    Err(e) if status(&e) == Some(404) => {}
                    Err(e) => return Err(self.io_error("AbortMultipartUpload", key, e)),
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Puts `data` under `key`; with `create_only`, only if nothing is there (`If-None-Match`).
    async fn put(&self, key: &str, data: Bytes, create_only: bool) -> Result<()> {
        let len = data.len() as i64;
        let mut request = self.client.put_object().bucket(&*self.bucket).key(key).content_length(len).body(S3Body::from(data));
        if create_only {
            request = request.if_none_match("*");
        }
        let sent = if self.sign_payloads { request.send().await } else { request.customize().disable_payload_signing().send().await };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if create_only && matches!(status(&e), Some(412 | 409)) => Err(conflict(key)),
            Err(e) => Err(self.io_error("PutObject", key, e)),
        }
    }

    /// Starts a multipart upload of `key`; its guard aborts it unless it is completed.
    async fn start_multipart(&self, key: &str) -> Result<Multipart> {
        let out = self.client.create_multipart_upload().bucket(&*self.bucket).key(key).send().await.map_err(|e| self.io_error("CreateMultipartUpload", key, e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| BlobError::Io(io::Error::other(format!("S3 CreateMultipartUpload {}/{key}: no upload id in the answer", self.bucket))))?;
        Ok(Multipart { store: self.clone(), key: key.to_owned(), upload_id: upload_id.to_owned(), parts: Vec::new(), open: true })
    }

    /// Sends part `number` of a multipart upload.
    async fn upload_part(&self, key: &str, upload_id: &str, number: i32, data: Bytes) -> Result<CompletedPart> {
        let len = data.len() as i64;
        let request = self.client.upload_part().bucket(&*self.bucket).key(key).upload_id(upload_id).part_number(number).content_length(len).body(S3Body::from(data));
        let sent = if self.sign_payloads { request.send().await } else { request.customize().disable_payload_signing().send().await };
        let out = sent.map_err(|e| self.io_error("UploadPart", key, e))?;
        Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build())
    }

    /// Copies bytes `from..from + len` of `source` as part `number` of a multipart upload.
    async fn copy_part(&self, key: &str, upload_id: &str, number: i32, source: &str, from: u64, len: u64) -> Result<CompletedPart> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&*self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source(&self.bucket, source))
            .copy_source_range(format!("bytes={from}-{}", from + len - 1))
            .send()
            .await
            .map_err(|e| self.io_error("UploadPartCopy", source, e))?;
        let etag = out.copy_part_result().and_then(|r| r.e_tag()).map(str::to_owned);
        Ok(CompletedPart::builder().part_number(number).set_e_tag(etag).build())
    }

    /// Reads bytes `from..from + len` of `key` into `into`.
    async fn read_range(&self, key: &str, from: u64, len: u64, into: &mut BytesMut) -> Result<()> {
        let out = self
            .client
            .get_object()
            .bucket(&*self.bucket)
            .key(key)
            .range(format!("bytes={from}-{}", from + len - 1))
            .send()
            .await
            .map_err(|e| self.io_error("GetObject", key, e))?;
        let mut body = out.body;
        let start = into.len();
        while let Some(chunk) = body.try_next().await.map_err(|e| BlobError::Io(io::Error::other(format!("S3 GetObject {}/{key}: {e}", self.bucket))))? {
            into.extend_from_slice(&chunk);
        }
        let got = (into.len() - start) as u64;
        if got != len {
            return Err(BlobError::Io(io::Error::other(format!("S3 GetObject {}/{key}: {got} bytes, not {len}", self.bucket))));
        }
        Ok(())
    }

    /// Reads the segments (in order) into one buffer.
    async fn gather(&self, pieces: &[Piece], segments: &[(usize, u64, u64)]) -> Result<Bytes> {
        let total: u64 = segments.iter().map(|s| s.2).sum();
        let mut buf = BytesMut::with_capacity(usize::try_from(total).unwrap_or(PART));
        for &(i, from, len) in segments {
            self.read_range(&pieces[i].key, from, len, &mut buf).await?;
        }
        Ok(buf.freeze())
    }

    /// Writes the first `size` bytes of the upload (`segments` of `pieces`) as the object `key`,
    /// in one atomic operation.
    async fn assemble(&self, key: &str, pieces: &[Piece], segments: &[(usize, u64, u64)], size: u64) -> Result<()> {
        if size == 0 {
            return self.put(key, Bytes::new(), false).await;
        }
        if let [(i, 0, len)] = segments {
            if *len == pieces[*i].size && *len <= COPY_OBJECT_MAX {
                let source = &pieces[*i].key;
                self.client
                    .copy_object()
                    .bucket(&*self.bucket)
                    .key(key)
                    .copy_source(copy_source(&self.bucket, source))
                    .send()
                    .await
                    .map_err(|e| self.io_error("CopyObject", source, e))?;
                return Ok(());
            }
        }
        if size <= PART as u64 {
            let data = self.gather(pieces, segments).await?;
            return self.put(key, data, false).await;
        }
        let plan = plan(segments);
        if plan.len() > MAX_PARTS {
            return Err(BlobError::Io(io::Error::other(format!(
                "an upload of {size} bytes in {} pieces needs {} parts, more than S3's {MAX_PARTS}",
                pieces.len(),
                plan.len()
            ))));
        }
        let mut multipart = self.start_multipart(key).await?;
        let upload_id = multipart.upload_id.clone();
        let jobs = plan.into_iter().enumerate().map(|(n, part)| {
            let upload_id = &upload_id;
            async move {
                let number = i32::try_from(n + 1).unwrap_or(i32::MAX);
                match part {
                    Planned::Copy { piece, from, len } => self.copy_part(key, upload_id, number, &pieces[piece].key, from, len).await,
                    Planned::Gather(segments) => {
                        let data = self.gather(pieces, &segments).await?;
                        self.upload_part(key, upload_id, number, data).await
                    }
                }
            }
        });
        let mut done = stream::iter(jobs).buffered(ASSEMBLY_JOBS);
        while let Some(part) = done.next().await {
            multipart.parts.push(part?);
        }
        drop(done);
        multipart.complete(false).await
    }
}

/// What a failed request says about itself: HTTP status, S3 error code, message.
fn failure<T, E>(result: std::result::Result<T, SdkError<E>>) -> Result<(), (Option<u16>, Option<String>, String)>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err((status(&e), e.code().map(str::to_owned), sdk_message(&e))),
    }
}

/// What went wrong, for messages and logs, by Display only (the SDK's own `DisplayErrorContext`
/// ends with the Debug form of the error, which logs must not carry): S3's HTTP status, error
/// code and message for an answer, else the chain of causes (no answer: connect, timeout, TLS).
fn sdk_message<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(service) = e {
        let err = service.err();
        let status = service.raw().status().as_u16();
        return match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
            (Some(code), None) => format!("HTTP {status} {code}"),
            _ => format!("HTTP {status}"),
        };
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn conflict(key: &str) -> BlobError {
    BlobError::Io(io::Error::other(format!(
        "another write stored {key} meanwhile (a write whose claim was lost?): nothing of this write counts, retry it"
    )))
}

/// `x-amz-copy-source`: bucket and key, the key percent-encoded (slashes kept).
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A piece of an upload: the object `key` holding the bytes written from offset `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    start: u64,
    size: u64,
    key: String,
}

/// What the bucket holds of one upload.
#[derive(Debug, Default)]
struct Layout {
    /// The marker exists (the upload was created and not completed or aborted).
    exists: bool,
    /// The pieces, by offset.
    pieces: Vec<Piece>,
    /// Every key under the upload's prefix.
    keys: Vec<String>,
}

impl Layout {
    fn spans(&self) -> Vec<(u64, u64)> {
        self.pieces.iter().map(|p| (p.start, p.size)).collect()
    }
}

/// A piece's name: its offset as 20 digits.
fn offset_name(offset: u64) -> String {
    format!("{offset:020}")
}

fn parse_offset(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

/// The bytes the pieces (`(start, size)`, sorted by start) hold without a gap from 0, each
/// piece covering from its start to its end or to the next piece's start.
fn stored(spans: &[(u64, u64)]) -> u64 {
    let mut end = 0;
    for &(start, size) in spans {
        if start > end {
            break;
        }
        end = start + size;
    }
    end
}

/// The first `size` bytes as segments `(piece index, from within the piece, length)`, in order.
/// Needs `stored(spans) >= size`.
fn segments(spans: &[(u64, u64)], size: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    for (i, &(start, len)) in spans.iter().enumerate() {
        if start >= size {
            break;
        }
        let next = spans.get(i + 1).map_or(u64::MAX, |s| s.0);
        let end = (start + len).min(next).min(size);
        if end > start {
            out.push((i, 0, end - start));
        }
    }
    out
}

/// One part of a completion's multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Planned {
    /// Copied server-side: bytes `from..from + len` of piece `piece`.
    Copy { piece: usize, from: u64, len: u64 },
    /// Read and sent again: these `(piece index, from, len)` in order.
    Gather(Vec<(usize, u64, u64)>),
}

/// Plans the parts of a completion: every stretch of at least `MIN_PART` bytes that starts a
/// part is copied (in pieces of at most `COPY_PIECE`); shorter stretches are gathered into parts
/// of `PART` bytes. Every part but the last has at least `MIN_PART` bytes.
fn plan(segments: &[(usize, u64, u64)]) -> Vec<Planned> {
    let mut parts = Vec::new();
    let mut pending: Vec<(usize, u64, u64)> = Vec::new();
    let mut pending_len = 0u64;
    for &(piece, from, len) in segments {
        let end = from + len;
        let mut at = from;
        while at < end {
            let remaining = end - at;
            if pending_len == 0 && remaining >= MIN_PART {
                let n = remaining.min(COPY_PIECE);
                parts.push(Planned::Copy { piece, from: at, len: n });
                at += n;
            } else {
                let n = remaining.min(PART as u64 - pending_len);
                pending.push((piece, at, n));
                pending_len += n;
                at += n;
                if pending_len >= PART as u64 {
                    parts.push(Planned::Gather(std::mem::take(&mut pending)));
                    pending_len = 0;
                }
            }
        }
    }
    if !pending.is_empty() {
        parts.push(Planned::Gather(pending));
    }
    parts
}

/// A multipart upload in progress; aborted in the background if dropped before it is completed
/// or aborted (a dropped request).
struct Multipart {
    store: S3Store,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    open: bool,
}

impl Multipart {
    /// Completes the upload with its parts; with `create_only`, only if nothing is under the key.
    async fn complete(mut self, create_only: bool) -> Result<()> {
        let store = self.store.clone();
        let parts = std::mem::take(&mut self.parts);
        let mut request = store
            .client
            .complete_multipart_upload()
            .bucket(&*store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        if create_only {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                let error = if create_only && matches!(status(&e), Some(412 | 409)) { conflict(&self.key) } else { store.io_error("CompleteMultipartUpload", &self.key, e) };
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Aborts the upload (best effort: the sweep aborts what remains).
    async fn abort(mut self) {
        self.open = false;
        if let Err(e) = self.store.client.abort_multipart_upload().bucket(&*self.store.bucket).key(&self.key).upload_id(&self.upload_id).send().await {
            tracing::warn!(key = self.key, error = %sdk_message(&e), "could not abort a multipart upload; the upload sweep will");
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (client, bucket, key, upload_id) = (self.store.client.clone(), self.store.bucket.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.upload_id));
        runtime.spawn(async move {
            if let Err(e) = client.abort_multipart_upload().bucket(&*bucket).key(&key).upload_id(&upload_id).send().await {
                tracing::warn!(key, error = %sdk_message(&e), "could not abort the multipart upload of a dropped write; the upload sweep will");
            }
        });
    }
}

/// A part being hashed and sent: the hasher back, the part, its length.
type PartJob<'a> = Pin<Box<dyn Future<Output = Result<(ResumableHasher, CompletedPart, u64)>> + Send + 'a>>;

/// Hashes `data` with `hasher` on the blocking pool (a short job; the bytes stay shared).
async fn hash(mut hasher: ResumableHasher, data: Bytes) -> Result<(ResumableHasher, Bytes)> {
    tokio::task::spawn_blocking(move || {
        hasher.update(&data);
        (hasher, data)
    })
    .await
    .map_err(|e| BlobError::Io(io::Error::other(format!("hashing an upload part failed: {e}"))))
}

impl S3Store {
    /// Streams `body` into pieces from `offset` on (see the module docs).
    async fn write_pieces(&self, id: &str, offset: u64, mut body: ByteStream, hasher: ResumableHasher) -> Result<PartWritten> {
        let prefix = self.upload_prefix(id);
        let mut hasher = Some(hasher);
        // Bytes stored and hashed by finished parts and pieces.
        let mut written = 0u64;
        // Where the current piece starts.
        let mut piece_start = offset;
        let mut buf = BytesMut::new();
        let mut multipart: Option<Multipart> = None;
        let mut in_flight: Option<PartJob<'_>> = None;
        let mut ended = false;
        let mut body_error = None;
        loop {
            // A full buffer is sent as the next part once the previous one is done (but a body
            // that ended within the first part is one PutObject, below).
            if buf.len() >= PART && in_flight.is_none() && !(ended && multipart.is_none()) {
                if multipart.as_ref().is_some_and(|m| m.parts.len() >= MAX_PARTS) {
                    if let Some(m) = multipart.take() {
                        m.complete(true).await?;
                    }
                    piece_start = offset + written;
                }
                if multipart.is_none() {
                    multipart = Some(self.start_multipart(&format!("{prefix}{}", offset_name(piece_start))).await?);
                }
                let Some(m) = multipart.as_mut() else { return Err(BlobError::Io(io::Error::other("upload write lost its multipart upload"))) };
                let number = i32::try_from(m.parts.len() + 1).unwrap_or(i32::MAX);
                let (key, upload_id) = (m.key.clone(), m.upload_id.clone());
                let data = buf.split().freeze();
                let Some(h) = hasher.take() else { return Err(lost_hasher()) };
                in_flight = Some(Box::pin(async move {
                    let len = data.len() as u64;
                    let (h, data) = hash(h, data).await?;
                    let part = self.upload_part(&key, &upload_id, number, data).await?;
                    Ok((h, part, len))
                }));
                continue;
            }
            if ended && in_flight.is_none() {
                break;
            }
            let receiving = !ended && buf.len() < PART;
            tokio::select! {
                biased;
                done = async { match in_flight.as_mut() { Some(job) => job.await, None => std::future::pending().await } }, if in_flight.is_some() => {
                    in_flight = None;
                    let (h, part, len) = done?;
                    hasher = Some(h);
                    written += len;
                    if let Some(m) = multipart.as_mut() {
                        m.parts.push(part);
                    }
                }
                item = body.next(), if receiving => match item {
                    Some(Ok(chunk)) => {
                        if buf.is_empty() && buf.capacity() < PART {
                            buf.reserve(PART);
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => {
                        body_error = Some(e);
                        ended = true;
                    }
                    None => ended = true,
                },
            }
        }
        // The rest: the last part of the multipart upload, or the whole piece.
        let Some(mut h) = hasher.take() else { return Err(lost_hasher()) };
        if !buf.is_empty() && multipart.as_ref().is_some_and(|m| m.parts.len() >= MAX_PARTS) {
            if let Some(m) = multipart.take() {
                m.complete(true).await?;
            }
            piece_start = offset + written;
        }
        match multipart {
            Some(mut m) => {
                if !buf.is_empty() {
                    let data = buf.split().freeze();
                    let len = data.len() as u64;
                    let (next, data) = hash(h, data).await?;
                    h = next;
                    let number = i32::try_from(m.parts.len() + 1).unwrap_or(i32::MAX);
                    let part = self.upload_part(&m.key, &m.upload_id, number, data).await?;
                    m.parts.push(part);
                    written += len;
                }
                m.complete(true).await?;
            }
            None if !buf.is_empty() => {
                let data = buf.split().freeze();
                let len = data.len() as u64;
                let (next, data) = hash(h, data).await?;
                h = next;
                self.put(&format!("{prefix}{}", offset_name(piece_start)), data, true).await?;
                written += len;
            }
            None => {}
        }
        if let Some(e) = &body_error {
            tracing::debug!(upload = id, kept = written, error = %e, "upload body failed midway");
        }
        Ok(PartWritten { written, hasher: h, body_error })
    }
}

fn lost_hasher() -> BlobError {
    BlobError::Io(io::Error::other("upload write lost its hasher"))
}

/// Upload ids: 1 to 64 characters of `[A-Za-z0-9_-]`.
fn check_id(id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(BlobError::UploadUnknown(id.to_owned()))
    }
}

/// The body of a `GetObject`, chunk by chunk as it arrives; ends after an error.
fn body_stream(body: S3Body, key: String) -> ByteStream {
    Box::pin(stream::unfold(Some((body, key)), |state| async move {
        let (mut body, key) = state?;
        match body.try_next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((body, key)))),
            Ok(None) => None,
            Err(e) => Some((Err(io::Error::other(format!("reading S3 object {key}: {e}"))), None)),
        }
    }))
}

/// State of a paged listing.
struct Pages {
    store: S3Store,
    prefix: String,
    token: Option<String>,
    done: bool,
}

#[async_trait]
impl BlobStore for S3Store {
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        if !valid_key(key) {
            return Err(BlobError::NotFound(key.to_owned()));
        }
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| BlobError::Io(io::Error::other(format!("presigning a GetObject for {ttl:?}: {e}"))))?;
        let s3_key = self.object_key(key);
        let request = self
            .client
            .get_object()
            .bucket(&*self.bucket)
            .key(&s3_key)
            .presigned(config)
            .await
            .map_err(|e| self.io_error("GetObject (presigning)", &s3_key, e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn ping(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&*self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(BlobError::Io(io::Error::other(match status(&e) {
                None => format!("{}: cannot reach the S3 server: {}", self.place, sdk_message(&e)),
                Some(404) => format!("{}: the bucket does not exist", self.place),
                Some(403) => format!("{}: access denied to the bucket", self.place),
                Some(s) => format!("{}: HeadBucket answered HTTP {s}", self.place),
            }))),
        }
    }

    async fn upload_create(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let layout = self.layout(id).await?;
        if !layout.keys.is_empty() {
            self.delete_keys(&layout.keys).await?;
        }
        self.put(&format!("{}{MARKER}", self.upload_prefix(id)), Bytes::new(), false).await
    }

    async fn upload_write(&self, id: &str, part: u32, offset: u64, body: ByteStream, hasher: ResumableHasher) -> Result<PartWritten> {
        check_id(id)?;
        let layout = self.layout(id).await?;
        if !layout.exists {
            return Err(BlobError::UploadUnknown(id.to_owned()));
        }
        let stored = stored(&layout.spans());
        if stored < offset {
            return Err(BlobError::OutOfOrder { expected: stored, got: offset });
        }
        // Everything from `offset` on is replaced (a write whose claim was lost).
        let stale: Vec<String> = layout.pieces.iter().filter(|p| p.start >= offset).map(|p| p.key.clone()).collect();
        if !stale.is_empty() {
            tracing::debug!(upload = id, part, offset, pieces = stale.len(), "replacing the pieces of a write whose claim was lost");
            self.delete_keys(&stale).await?;
        }
        self.write_pieces(id, offset, body, hasher).await
    }

    async fn upload_complete(&self, id: &str, parts: u32, size: u64, digest: &Digest) -> Result<Committed> {
        check_id(id)?;
        let layout = self.layout(id).await?;
        if !layout.exists {
            return Err(BlobError::UploadUnknown(id.to_owned()));
        }
        let spans = layout.spans();
        let actual = stored(&spans);
        if actual < size {
            return Err(BlobError::SizeMismatch { declared: size, actual });
        }
        let segments = segments(&spans, size);
        let alg = digest.algorithm().as_str();
        let hex = digest.hex();
        let key = format!("{alg}/{}/{hex}/{}", &hex[..2], uuid::Uuid::new_v4().simple());
        self.assemble(&self.object_key(&key), &layout.pieces, &segments, size).await?;
        tracing::debug!(upload = id, parts, pieces = layout.pieces.len(), size, key, "upload completed");
        // The object exists: a failure to remove the upload's pieces leaves garbage for the
        // sweep, not a failed completion.
        if let Err(e) = self.delete_keys(&layout.keys).await {
            tracing::warn!(upload = id, error = %e, "could not delete a completed upload's pieces; the upload sweep will");
        }
        Ok(Committed { key, size })
    }

    async fn upload_abort(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let prefix = self.upload_prefix(id);
        // The marker first, so a write racing the abort finds no upload.
        let layout = self.layout(id).await?;
        let (marker, rest): (Vec<String>, Vec<String>) = layout.keys.into_iter().partition(|k| k.ends_with(MARKER));
        self.delete_keys(&marker).await?;
        self.delete_keys(&rest).await?;
        self.abort_multipart_under(&prefix).await
    }

    fn list_uploads(&self) -> NameStream {
        let root = format!("{}uploads/", self.prefix);
        // The upload prefixes (ids with objects), then the ids of multipart uploads in progress
        // with no object (dropped writes).
        let prefixes = stream::unfold(Pages { store: self.clone(), prefix: root.clone(), token: None, done: false }, |mut pages| async move {
            if pages.done {
                return None;
            }
            let store = &pages.store;
            let sent = store
                .client
                .list_objects_v2()
                .bucket(&*store.bucket)
                .prefix(&pages.prefix)
                .delimiter("/")
                .max_keys(store.page_size)
                .set_continuation_token(pages.token.take())
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    pages.done = true;
                    let error = store.io_error("ListObjectsV2", &pages.prefix, e);
                    return Some((vec![Err(error)], pages));
                }
            };
            let names: Vec<Result<String>> = out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix())
                .filter_map(|p| p.strip_prefix(&pages.prefix))
                .filter_map(|p| p.strip_suffix('/'))
                .filter(|id| valid_id(id))
                .map(|id| Ok(id.to_owned()))
                .collect();
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => pages.token = Some(t.to_owned()),
                _ => pages.done = true,
            }
            Some((names, pages))
        })
        .flat_map(stream::iter);
        let store = self.clone();
        let orphans = stream::once(async move { store.dangling_multipart_ids(&root).await })
            .flat_map(|ids| stream::iter(match ids {
                Ok(ids) => ids.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }));
        Box::pin(prefixes.chain(orphans))
    }

    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<ObjectReader> {
        if !valid_key(key) {
            return Err(BlobError::NotFound(key.to_owned()));
        }
        let s3_key = self.object_key(key);
        let mut request = self.client.get_object().bucket(&*self.bucket).key(&s3_key);
        if let Some((start, end)) = range {
            request = request.range(format!("bytes={start}-{end}"));
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) || e.code() == Some("NoSuchKey") => return Err(BlobError::NotFound(key.to_owned())),
            Err(e) if status(&e) == Some(416) => {
                // A range past the end (the caller checks ranges; an empty object has no byte).
                let size = self.head_size(&s3_key, key).await?;
                return Ok(ObjectReader { size, body: Box::pin(stream::empty()) });
            }
            Err(e) => return Err(self.io_error("GetObject", &s3_key, e)),
        };
        let size = match (range, out.content_range()) {
            (None, _) => u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            (Some(_), Some(r)) => r.rsplit_once('/').and_then(|(_, total)| total.trim().parse().ok()).ok_or_else(|| {
                BlobError::Io(io::Error::other(format!("S3 GetObject {}/{s3_key}: unreadable Content-Range {r:?}", self.bucket)))
            })?,
            (Some(_), None) => {
                return Err(BlobError::Io(io::Error::other(format!("S3 GetObject {}/{s3_key}: the server ignored the Range header", self.bucket))));
            }
        };
        Ok(ObjectReader { size, body: body_stream(out.body, s3_key) })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if !valid_key(key) {
            return Err(BlobError::NotFound(key.to_owned()));
        }
        let s3_key = self.object_key(key);
        match self.client.delete_object().bucket(&*self.bucket).key(&s3_key).send().await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.io_error("DeleteObject", &s3_key, e)),
        }
    }

    fn list_objects(&self, older_than_secs: u64) -> NameStream {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // 0: every object (no comparison with the server's clock).
        let cutoff = match older_than_secs {
            0 => None,
            age => match now.checked_sub(age) {
                Some(c) => Some(i64::try_from(c).unwrap_or(i64::MAX)),
                None => return Box::pin(stream::empty()),
            },
        };
        let root = format!("{}blobs/", self.prefix);
        let pages = stream::unfold(Pages { store: self.clone(), prefix: root, token: None, done: false }, move |mut pages| async move {
            if pages.done {
                return None;
            }
            let store = &pages.store;
            let sent = store
                .client
                .list_objects_v2()
                .bucket(&*store.bucket)
                .prefix(&pages.prefix)
                .max_keys(store.page_size)
                .set_continuation_token(pages.token.take())
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    pages.done = true;
                    let error = store.io_error("ListObjectsV2", &pages.prefix, e);
                    return Some((vec![Err(error)], pages));
                }
            };
            let names: Vec<Result<String>> = out
                .contents()
                .iter()
                .filter(|o| match (cutoff, o.last_modified()) {
                    (None, _) => true,
                    (Some(c), Some(t)) => t.secs() <= c,
                    (Some(_), None) => false,
                })
                .filter_map(|o| o.key())
                .filter_map(|k| k.strip_prefix(&pages.prefix))
                .filter(|k| valid_key(k))
                .map(|k| Ok(k.to_owned()))
                .collect();
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => pages.token = Some(t.to_owned()),
                _ => pages.done = true,
            }
            Some((names, pages))
        });
        Box::pin(pages.flat_map(stream::iter))
    }
}

impl S3Store {
    /// The size of object `s3_key` (`key` for `NotFound`).
    async fn head_size(&self, s3_key: &str, key: &str) -> Result<u64> {
        match self.client.head_object().bucket(&*self.bucket).key(s3_key).send().await {
            Ok(out) => Ok(u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0)),
            Err(e) if status(&e) == Some(404) => Err(BlobError::NotFound(key.to_owned())),
            Err(e) => Err(self.io_error("HeadObject", s3_key, e)),
        }
    }

    /// Ids of the multipart uploads in progress under `root` (`<prefix>uploads/`) whose upload
    /// has no object (so the prefix listing did not name them).
    async fn dangling_multipart_ids(&self, root: &str) -> Result<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&*self.bucket)
                .prefix(root)
                .max_uploads(self.page_size)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.io_error("ListMultipartUploads", root, e))?;
            for upload in out.uploads() {
                let Some(id) = upload.key().and_then(|k| k.strip_prefix(root)).and_then(|k| k.split_once('/')).map(|(id, _)| id) else { continue };
                if valid_id(id) && !ids.iter().any(|seen| seen == id) {
                    ids.push(id.to_owned());
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        let mut dangling = Vec::new();
        for id in ids {
            let prefix = self.upload_prefix(&id);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&*self.bucket)
                .prefix(&prefix)
                .max_keys(1)
                .send()
                .await
                .map_err(|e| self.io_error("ListObjectsV2", &prefix, e))?;
            if out.contents().is_empty() {
                dangling.push(id);
            }
        }
        Ok(dangling)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn stored_follows_the_overlay_from_zero() {
        let cases: &[(&[(u64, u64)], u64)] = &[
            (&[], 0),
            (&[(0, 5)], 5),
            (&[(0, 5), (5, 3)], 8),
            // A gap: the bytes past it are unreachable.
            (&[(0, 5), (9, 3)], 5),
            (&[(3, 5)], 0),
            // A later piece inside an earlier one replaces its tail, even when shorter.
            (&[(0, 700), (300, 200)], 500),
            (&[(0, 700), (300, 600)], 900),
            (&[(0, 10), (4, 0)], 4),
        ];
        for (spans, want) in cases {
            assert_eq!(stored(spans), *want, "{spans:?}");
        }
    }

    /// Pieces `(start, size)`, a size, the segments wanted.
    type SegmentCase<'a> = (&'a [(u64, u64)], u64, &'a [(usize, u64, u64)]);

    #[test]
    fn segments_cover_the_first_bytes() {
        let cases: &[SegmentCase<'_>] = &[
            (&[(0, 5)], 5, &[(0, 0, 5)]),
            (&[(0, 5)], 3, &[(0, 0, 3)]),
            (&[(0, 5), (5, 3)], 8, &[(0, 0, 5), (1, 0, 3)]),
            (&[(0, 5), (5, 3)], 5, &[(0, 0, 5)]),
            (&[(0, 5), (5, 3)], 6, &[(0, 0, 5), (1, 0, 1)]),
            (&[(0, 700), (300, 200)], 500, &[(0, 0, 300), (1, 0, 200)]),
            (&[(0, 700), (300, 200)], 250, &[(0, 0, 250)]),
            (&[(0, 5)], 0, &[]),
        ];
        for (spans, size, want) in cases {
            assert_eq!(segments(spans, *size), want.to_vec(), "{spans:?} {size}");
        }
    }

    /// Every plan covers its segments exactly, in order, and only its last part is short.
    fn check_plan(segments: &[(usize, u64, u64)]) -> Vec<Planned> {
        let parts = plan(segments);
        let mut covered: Vec<(usize, u64, u64)> = Vec::new();
        for (n, part) in parts.iter().enumerate() {
            let len = match part {
                Planned::Copy { piece, from, len } => {
                    covered.push((*piece, *from, *len));
                    *len
                }
                Planned::Gather(g) => {
                    covered.extend(g.iter().copied());
                    g.iter().map(|s| s.2).sum()
                }
            };
            if let Planned::Copy { len, .. } = part {
                assert!(*len >= MIN_PART && *len <= COPY_PIECE, "{segments:?}: copy part {n} of {len}");
            }
            if n + 1 < parts.len() {
                assert!(len >= MIN_PART, "{segments:?}: part {n} of {len} bytes is not the last");
            }
        }
        // Merge adjacent ranges of one piece and compare with the segments.
        let mut merged: Vec<(usize, u64, u64)> = Vec::new();
        for (p, from, len) in covered {
            match merged.last_mut() {
                Some(last) if last.0 == p && last.1 + last.2 == from => last.2 += len,
                _ => merged.push((p, from, len)),
            }
        }
        assert_eq!(merged, segments.to_vec());
        parts
    }

    #[test]
    fn plans_copy_long_stretches_and_gather_short_ones() {
        // One big piece: copied whole.
        assert_eq!(check_plan(&[(0, 0, 40 * MIB)]), vec![Planned::Copy { piece: 0, from: 0, len: 40 * MIB }]);
        // Two long pieces (the suite's large upload): two copies.
        assert_eq!(check_plan(&[(0, 0, 24 * MIB + 1024), (1, 0, 16 * MIB - 1024)]).len(), 2);
        // 1 MiB chunks: gathered into 8 MiB parts.
        let small: Vec<(usize, u64, u64)> = (0..20).map(|i| (i, 0, MIB)).collect();
        let parts = check_plan(&small);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| matches!(p, Planned::Gather(_))));
        // Small, big, small, big, tiny: the small ones borrow from the big ones to reach 8 MiB.
        let mixed = [(0, 0, MIB), (1, 0, 20 * MIB), (2, 0, 3 * MIB), (3, 0, 6 * MIB), (4, 0, 3)];
        let parts = check_plan(&mixed);
        assert_eq!(parts[0], Planned::Gather(vec![(0, 0, MIB), (1, 0, 7 * MIB)]));
        assert_eq!(parts[1], Planned::Copy { piece: 1, from: 7 * MIB, len: 13 * MIB });
        // A long piece is copied in pieces of at most COPY_PIECE.
        let parts = check_plan(&[(0, 0, 3 * COPY_PIECE + 2 * MIB)]);
        assert_eq!(parts.len(), 4);
        check_plan(&[(0, 0, COPY_PIECE + MIN_PART - 1), (1, 0, 1)]);
        check_plan(&[(0, 0, 4 * MIB), (1, 0, MIN_PART), (2, 0, 4 * MIB + 1), (3, 0, PART as u64 * 3 + 7)]);
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(offset_name(42), "00000000000000000042");
        assert_eq!(parse_offset(&offset_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_offset("upload"), None);
        assert_eq!(parse_offset("0000000000000000004"), None);
        assert_eq!(copy_source("b", "p q/sha256/ab/x+y"), "b/p%20q/sha256/ab/x%2By");
        assert!(valid_key(&format!("sha256/ab/ab{}/{}", "0".repeat(62), "f".repeat(32))));
        assert!(!valid_key("sha256/ab/../x"));
        assert!(valid_id("suite-list-1") && !valid_id("a/b") && !valid_id(""));
    }

    #[tokio::test]
    async fn options_are_checked_before_any_request() {
        let mut o = S3Options::new("b");
        o.endpoint = Some("http://127.0.0.1:1".into());
        let e = S3Store::new(o.clone()).await.unwrap_err();
        assert!(e.0.contains("plain HTTP"), "{e}");
        o.allow_http = true;
        o.access_key_id = Some("k".into());
        let e = S3Store::new(o.clone()).await.unwrap_err();
        assert!(e.0.contains("both"), "{e}");
        let e = S3Store::new(S3Options::new("")).await.unwrap_err();
        assert!(e.0.contains("no bucket"), "{e}");
        o.secret_access_key = Some("s".into());
        o.prefix = "/a/b/".into();
        let store = S3Store::new(o).await.unwrap();
        assert_eq!(&*store.prefix, "a/b/");
        assert!(format!("{:?}", S3Options { secret_access_key: Some("hunter2".into()), ..S3Options::new("b") }).contains("redacted"));
    }

    #[test]
    fn storage_urls() {
        let o = S3Options::from_url("s3://bucket/some/prefix?region=eu-central-1&endpoint=https://minio.internal:9000&path_style=true").unwrap();
        assert_eq!(o.bucket, "bucket");
        assert_eq!(o.prefix, "some/prefix");
        assert_eq!(o.region.as_deref(), Some("eu-central-1"));
        assert_eq!(o.endpoint.as_deref(), Some("https://minio.internal:9000"));
        assert!(o.path_style && !o.allow_http);
        let o = S3Options::from_url("s3://b").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str(), o.region, o.endpoint, o.path_style), ("b", "", None, None, false));
        let o = S3Options::from_url("s3://b/with%20space/?allow_http=1&path_style=false").unwrap();
        assert_eq!(o.prefix, "with space");
        assert!(o.allow_http && !o.path_style);
        // An endpoint with its own query must be encoded; an encoded one decodes.
        let o = S3Options::from_url("s3://b?endpoint=http%3A%2F%2F127.0.0.1%3A9000").unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        for (url, says) in [
            ("https://bucket/prefix", "scheme must be s3"),
            ("s3://key:hunter2@bucket/p", "credentials do not belong"),
            ("s3://bucket:9000/p", "?endpoint="),
            ("s3:///prefix", "no bucket"),
            ("s3://b?regoin=x", "unknown parameter \"regoin\""),
            ("s3://b?path_style=maybe", "write true or false"),
            ("s3://b?region=a&region=b", "given twice"),
            ("bucket/prefix", "not a URL"),
        ] {
            let e = S3Options::from_url(url).unwrap_err().0;
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: the message repeats the secret: {e}");
        }
    }
}
