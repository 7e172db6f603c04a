//! The checks, one module per workflow category, and what they share: the run context, path
//! builders, upload helpers and response assertions.

/// Runs one check: `check!(ctx, category, "name", { ...; Ok(note) })`. The block is the body of
/// an async block returning `anyhow::Result<String>`; it may use `ctx` and `?`.
macro_rules! check {
    ($ctx:expr, $cat:expr, $name:expr, $body:block) => {{
        let outcome: anyhow::Result<String> = async { $body }.await;
        $ctx.record($cat, $name, outcome)
    }};
}

mod discovery;
mod expect;
mod management;
mod pull;
mod push;

use anyhow::{bail, Context};
use reqwest::Method;

use crate::client::{Client, Response};
use crate::data::{Blob, MT_OCTET_STREAM};
use crate::report::{Category, Report};
use crate::Config;

pub(crate) use expect::*;

/// Shared state of a run.
pub(crate) struct Ctx {
    pub client: Client,
    /// Repository under test.
    pub repo: String,
    /// Target repository of cross-repository mounts.
    pub mount_repo: String,
    /// Random id that makes this run's tags unique.
    pub run_id: String,
    pub report: Report,
}

impl Ctx {
    /// Records one check's outcome; returns whether it passed.
    pub fn record(&mut self, cat: Category, name: &str, outcome: anyhow::Result<String>) -> bool {
        self.report.record(cat, name, outcome)
    }

    /// A tag unique to this run.
    pub fn tag(&self, what: &str) -> String {
        format!("{what}-{}", self.run_id)
    }

    pub fn blob_path(&self, repo: &str, digest: &str) -> String {
        format!("/v2/{repo}/blobs/{digest}")
    }

    pub fn manifest_path(&self, repo: &str, reference: &str) -> String {
        format!("/v2/{repo}/manifests/{reference}")
    }

    pub fn uploads_path(&self, repo: &str) -> String {
        format!("/v2/{repo}/blobs/uploads/")
    }

    /// Starts an upload session: POST with an empty body, must answer 202 with a Location.
    pub async fn start_upload(&self, repo: &str) -> anyhow::Result<Response> {
        let resp = self
            .client
            .request(Method::POST, &self.uploads_path(repo))
            .send()
            .await?;
        status(&resp, &[202]).context("starting an upload session")?;
        resp.location()?;
        Ok(resp)
    }

    /// Uploads a blob with POST then a single PUT `?digest=`; must answer 201 with a Location.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> anyhow::Result<Response> {
        let post = self.start_upload(repo).await?;
        let resp = self
            .client
            .request_url(Method::PUT, post.location()?)
            .query("digest", &blob.digest)
            .header("Content-Type", MT_OCTET_STREAM)
            .body(blob.bytes.clone())
            .send()
            .await?;
        status(&resp, &[201]).context("completing the upload with PUT ?digest=")?;
        resp.location()?;
        Ok(resp)
    }

    /// Uploads a manifest under `reference` (a tag or a digest); must answer 201.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Blob,
    ) -> anyhow::Result<Response> {
        let resp = self
            .client
            .request(Method::PUT, &self.manifest_path(repo, reference))
            .header("Content-Type", m.media_type.clone())
            .body(m.bytes.clone())
            .send()
            .await?;
        status(&resp, &[201]).with_context(|| format!("PUT manifest {reference}"))?;
        Ok(resp)
    }

    /// Fetches a blob, expecting exactly `blob`'s bytes.
    pub async fn get_blob_expect(&self, repo: &str, blob: &Blob) -> anyhow::Result<Response> {
        let resp = self
            .client
            .request(Method::GET, &self.blob_path(repo, &blob.digest))
            .send()
            .await?;
        status(&resp, &[200])?;
        body_is(&resp, &blob.bytes)?;
        digest_header_if_present(&resp, &blob.digest)?;
        Ok(resp)
    }

    /// Best-effort delete used by teardowns: 2xx, 404 and 405 are all acceptable answers.
    pub async fn cleanup(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.client.request(Method::DELETE, path).send().await?;
        match resp.status {
            200..=299 => Ok(String::new()),
            404 => Ok("already gone (404)".into()),
            405 => Ok("deletes disabled (405)".into()),
            s => bail!("DELETE {path} answered {s}: {}", resp.body_snippet(200)),
        }
    }

    /// Teardown of a category: deletes manifests (by digest) then blobs, one check in all.
    pub async fn teardown(
        &mut self,
        cat: Category,
        repo: &str,
        manifests: &[&Blob],
        blobs: &[&Blob],
    ) {
        let mut notes = Vec::new();
        let mut result: anyhow::Result<()> = Ok(());
        for m in manifests {
            match self.cleanup(&self.manifest_path(repo, &m.digest)).await {
                Ok(n) if !n.is_empty() => notes.push(format!("manifest {}: {n}", short(&m.digest))),
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            for b in blobs {
                match self.cleanup(&self.blob_path(repo, &b.digest)).await {
                    Ok(n) if !n.is_empty() => notes.push(format!("blob {}: {n}", short(&b.digest))),
                    Ok(_) => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        let outcome = result.map(|_| notes.join("; "));
        self.record(
            cat,
            "teardown: delete the manifests, then the blobs (2xx, 404 or 405)",
            outcome,
        );
    }
}

/// First 19 characters of a digest, for notes.
pub(crate) fn short(digest: &str) -> &str {
    let end = digest
        .char_indices()
        .nth(19)
        .map(|(i, _)| i)
        .unwrap_or(digest.len());
    &digest[..end]
}

pub(crate) async fn run_all(cfg: Config) -> Report {
    let client = match Client::new(&cfg.url, cfg.username.clone(), cfg.password.clone()) {
        Ok(c) => c,
        Err(e) => {
            let mut report = Report::default();
            report.record(Category::Pull, "set up the HTTP client", Err(e));
            return report;
        }
    };
    let mut ctx = Ctx {
        client,
        repo: cfg.namespace.trim_matches('/').to_string(),
        mount_repo: cfg.cross_mount_namespace.trim_matches('/').to_string(),
        run_id: crate::data::random_id(),
        report: Report::default(),
    };
    pull::run(&mut ctx).await;
    push::run(&mut ctx).await;
    discovery::run(&mut ctx).await;
    management::run(&mut ctx).await;
    ctx.report
}
