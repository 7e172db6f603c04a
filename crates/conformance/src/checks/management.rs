//! Content management: deleting tags, manifests by digest and blobs, and what the registry
//! answers afterwards (404 with MANIFEST_UNKNOWN / BLOB_UNKNOWN, tags gone from the list).

use anyhow::{anyhow, ensure};
use reqwest::Method;
use serde_json::Value;

use super::*;
use crate::data::{self, Extras};

const C: Category = Category::Management;

/// What a DELETE told us about the registry's delete support.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deleted {
    Yes,
    Disallowed,
    Unknown,
}

pub(super) async fn run(ctx: &mut Ctx) {
    let repo = ctx.repo.clone();
    let cfg = data::image_config();
    let layer = data::layer(700);
    let m = data::image_manifest(&cfg, &[&layer], &Extras::default());
    let tag_del = ctx.tag("mgmt-delete");
    let tag_keep = ctx.tag("mgmt-keep");

    let mut tags_before: Option<usize> = None;
    check!(
        ctx,
        C,
        "setup: push a manifest under two tags and count the tags",
        {
            ctx.push_blob(&repo, &cfg).await?;
            ctx.push_blob(&repo, &layer).await?;
            ctx.push_manifest(&repo, &tag_del, &m).await?;
            ctx.push_manifest(&repo, &tag_keep, &m).await?;
            tags_before = Some(tag_list(ctx, &repo).await?.len());
            Ok(String::new())
        }
    );

    let mut tag_deleted = Deleted::Unknown;
    check!(
        ctx,
        C,
        "DELETE on a tag answers 202 (or 400 UNSUPPORTED / 405 where tag deletion is not allowed)",
        {
            let r = ctx
                .client
                .request(Method::DELETE, &ctx.manifest_path(&repo, &tag_del))
                .send()
                .await?;
            status(&r, &[202, 400, 405])?;
            match r.status {
                202 => {
                    tag_deleted = Deleted::Yes;
                    Ok(String::new())
                }
                400 => {
                    tag_deleted = Deleted::Disallowed;
                    error_code(&r, "UNSUPPORTED")?;
                    Ok("tag deletion unsupported (400 UNSUPPORTED)".into())
                }
                _ => {
                    tag_deleted = Deleted::Disallowed;
                    Ok("tag deletion not allowed (405)".into())
                }
            }
        }
    );
    check!(ctx, C, "after a tag DELETE the tag answers 404, while the manifest stays reachable by digest and other tags", {
        match tag_deleted {
            Deleted::Unknown => return Err(anyhow!("the tag DELETE failed")),
            Deleted::Disallowed => return Ok("not applicable: tag deletion not allowed".into()),
            Deleted::Yes => {}
        }
        let gone = head_manifest(ctx, &repo, &tag_del).await?;
        status(&gone, &[404]).map_err(|e| anyhow!("deleted tag: {e}"))?;
        let by_digest = head_manifest(ctx, &repo, &m.digest).await?;
        status(&by_digest, &[200]).map_err(|e| anyhow!("manifest by digest: {e}"))?;
        let kept = head_manifest(ctx, &repo, &tag_keep).await?;
        status(&kept, &[200]).map_err(|e| anyhow!("other tag: {e}"))?;
        Ok(String::new())
    });

    let mut manifest_deleted = Deleted::Unknown;
    check!(
        ctx,
        C,
        "DELETE on a manifest by digest answers 202 (405 where deletes are disabled)",
        {
            let r = ctx
                .client
                .request(Method::DELETE, &ctx.manifest_path(&repo, &m.digest))
                .send()
                .await?;
            status(&r, &[202, 405])?;
            if r.status == 405 {
                manifest_deleted = Deleted::Disallowed;
                return Ok("manifest deletion disabled (405)".into());
            }
            manifest_deleted = Deleted::Yes;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a deleted manifest answers 404 MANIFEST_UNKNOWN",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &m.digest))
                .accept_manifests()
                .send()
                .await?;
            if let Some(note) = not_applicable(manifest_deleted, &r)? {
                return Ok(note);
            }
            spec_error(&r, &[404], "MANIFEST_UNKNOWN")?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "HEAD on a deleted manifest answers 404, by digest and by its remaining tag",
        {
            let r = head_manifest(ctx, &repo, &m.digest).await?;
            if let Some(note) = not_applicable(manifest_deleted, &r)? {
                return Ok(note);
            }
            status(&r, &[404])?;
            let t = head_manifest(ctx, &repo, &tag_keep).await?;
            status(&t, &[404]).map_err(|e| anyhow!("tag of the deleted manifest: {e}"))?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "tags/list no longer lists the tags of the deleted manifest",
        {
            if manifest_deleted == Deleted::Disallowed && tag_deleted != Deleted::Yes {
                return Ok("not applicable: deletes disabled".into());
            }
            let before = tags_before.ok_or_else(|| anyhow!("no tag count: setup failed"))?;
            let tags = tag_list(ctx, &repo).await?;
            for t in [&tag_del, &tag_keep] {
                if manifest_deleted == Deleted::Yes || t == &tag_del {
                    ensure!(!tags.contains(t), "tag {t} is still listed");
                }
            }
            ensure!(
                tags.len() < before,
                "{} tags listed, {before} before the deletes",
                tags.len()
            );
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "DELETE on a manifest that is already deleted answers 404 MANIFEST_UNKNOWN",
        {
            let r = ctx
                .client
                .request(Method::DELETE, &ctx.manifest_path(&repo, &m.digest))
                .send()
                .await?;
            if manifest_deleted == Deleted::Disallowed {
                status(&r, &[405])?;
                return Ok("not applicable: deletes disabled".into());
            }
            spec_error(&r, &[404], "MANIFEST_UNKNOWN")?;
            Ok(String::new())
        }
    );

    let mut blob_deleted = Deleted::Unknown;
    check!(
        ctx,
        C,
        "DELETE on a blob answers 202 (405 where blob deletes are disabled)",
        {
            for b in [&cfg, &layer] {
                let r = ctx
                    .client
                    .request(Method::DELETE, &ctx.blob_path(&repo, &b.digest))
                    .send()
                    .await?;
                status(&r, &[202, 405])?;
                if r.status == 405 {
                    blob_deleted = Deleted::Disallowed;
                    return Ok("blob deletion disabled (405)".into());
                }
            }
            blob_deleted = Deleted::Yes;
            Ok(String::new())
        }
    );
    check!(ctx, C, "GET on a deleted blob answers 404 BLOB_UNKNOWN", {
        let r = ctx
            .client
            .request(Method::GET, &ctx.blob_path(&repo, &cfg.digest))
            .send()
            .await?;
        if let Some(note) = not_applicable(blob_deleted, &r)? {
            return Ok(note);
        }
        spec_error(&r, &[404], "BLOB_UNKNOWN")?;
        Ok(String::new())
    });
    check!(ctx, C, "HEAD on a deleted blob answers 404", {
        let r = ctx
            .client
            .request(Method::HEAD, &ctx.blob_path(&repo, &layer.digest))
            .send()
            .await?;
        if let Some(note) = not_applicable(blob_deleted, &r)? {
            return Ok(note);
        }
        status(&r, &[404])?;
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "DELETE on a blob that does not exist answers 404 BLOB_UNKNOWN",
        {
            let r = ctx
                .client
                .request(
                    Method::DELETE,
                    &ctx.blob_path(&repo, &data::unknown_digest()),
                )
                .send()
                .await?;
            if blob_deleted == Deleted::Disallowed {
                status(&r, &[405, 404])?;
                return Ok("not applicable: blob deletes disabled".into());
            }
            spec_error(&r, &[404], "BLOB_UNKNOWN")?;
            Ok(String::new())
        }
    );

    ctx.teardown(C, &repo, &[&m], &[&cfg, &layer]).await;
}

/// When the DELETE was refused as unsupported the follow-up check does not apply (the content
/// must still be there); when the DELETE itself failed the follow-up fails too.
fn not_applicable(deleted: Deleted, r: &Response) -> anyhow::Result<Option<String>> {
    match deleted {
        Deleted::Yes => Ok(None),
        Deleted::Disallowed => {
            status(r, &[200])?;
            Ok(Some("not applicable: deletes disabled".into()))
        }
        Deleted::Unknown => Err(anyhow!("the DELETE check failed")),
    }
}

async fn head_manifest(ctx: &Ctx, repo: &str, reference: &str) -> anyhow::Result<Response> {
    ctx.client
        .request(Method::HEAD, &ctx.manifest_path(repo, reference))
        .accept_manifests()
        .send()
        .await
}

/// The repository's tags; a repository with none may answer 404 NAME_UNKNOWN.
async fn tag_list(ctx: &Ctx, repo: &str) -> anyhow::Result<Vec<String>> {
    let r = ctx
        .client
        .request(Method::GET, &format!("/v2/{repo}/tags/list"))
        .send()
        .await?;
    if r.status == 404 {
        error_code(&r, "NAME_UNKNOWN")?;
        return Ok(Vec::new());
    }
    status(&r, &[200])?;
    let v: Value = serde_json::from_slice(&r.body)?;
    Ok(v.get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}
