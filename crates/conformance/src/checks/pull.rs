//! Pull: fetching blobs and manifests by digest and by tag, HEAD against GET, range requests on
//! blobs, and the 404s and error bodies for content that does not exist.

use anyhow::{bail, ensure};
use reqwest::Method;

use super::*;
use crate::data::{self, Blob, Extras};

const C: Category = Category::Pull;

pub(super) async fn run(ctx: &mut Ctx) {
    let repo = ctx.repo.clone();
    let cfg0 = data::image_config();
    let cfg1 = data::image_config();
    let layer = data::layer(1024);
    let big = data::opaque(2048);
    let m0 = data::image_manifest(
        &cfg0,
        &[&layer],
        &Extras {
            unknown_field: true,
            ..Extras::default()
        },
    );
    let m1 = data::image_manifest(&cfg1, &[&layer], &Extras::default());
    let tag = ctx.tag("pull");
    let missing = data::unknown_digest();

    check!(ctx, C, "GET /v2/ answers 200", {
        let r = ctx.client.request(Method::GET, "/v2/").send().await?;
        status(&r, &[200])?;
        Ok(String::new())
    });

    // Setup.
    for (name, blob) in [
        ("setup: push a config blob (POST, then PUT ?digest=)", &cfg0),
        ("setup: push a second config blob", &cfg1),
        ("setup: push a layer blob", &layer),
        ("setup: push a 2048-byte blob for range requests", &big),
    ] {
        check!(ctx, C, name, {
            ctx.push_blob(&repo, blob).await?;
            Ok(String::new())
        });
    }
    check!(ctx, C, "setup: push a manifest by tag", {
        ctx.push_manifest(&repo, &tag, &m0).await?;
        Ok(String::new())
    });
    check!(ctx, C, "setup: push a second manifest by digest", {
        ctx.push_manifest(&repo, &m1.digest, &m1).await?;
        Ok(String::new())
    });

    // Blobs.
    check!(
        ctx,
        C,
        "HEAD on a nonexistent blob answers 404 without a body",
        {
            let r = ctx
                .client
                .request(Method::HEAD, &ctx.blob_path(&repo, &missing))
                .send()
                .await?;
            status(&r, &[404])?;
            body_empty(&r)?;
            Ok(String::new())
        }
    );
    check!(ctx, C, "HEAD on a blob answers 200 with its Content-Length (and Docker-Content-Digest if sent), no body", {
        let r = ctx
            .client
            .request(Method::HEAD, &ctx.blob_path(&repo, &cfg0.digest))
            .send()
            .await?;
        status(&r, &[200])?;
        content_length_is(&r, cfg0.len())?;
        digest_header_if_present(&r, &cfg0.digest)?;
        body_empty(&r)?;
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "GET on a nonexistent blob answers 404 BLOB_UNKNOWN",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.blob_path(&repo, &missing))
                .send()
                .await?;
            spec_error(&r, &[404], "BLOB_UNKNOWN")?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a blob answers 200 with the exact content and Content-Length",
        {
            let r = ctx.get_blob_expect(&repo, &cfg0).await?;
            content_length_is(&r, cfg0.len())?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "HEAD and GET on a blob agree on Content-Length and Docker-Content-Digest",
        {
            let path = ctx.blob_path(&repo, &layer.digest);
            let h = ctx.client.request(Method::HEAD, &path).send().await?;
            let g = ctx.client.request(Method::GET, &path).send().await?;
            status(&h, &[200])?;
            status(&g, &[200])?;
            same_header(&h, &g, "content-length")?;
            same_header(&h, &g, "docker-content-digest")?;
            Ok(String::new())
        }
    );

    // Range requests on a 2048-byte blob.
    let n = big.len();
    range_check(ctx, &repo, &big, "bytes=500-1499", Some((500, 1499))).await;
    range_check(ctx, &repo, &big, "bytes=500-", Some((500, n - 1))).await;
    range_check(ctx, &repo, &big, "bytes=-500", Some((n - 500, n - 1))).await;
    range_check(ctx, &repo, &big, "bytes=2000-5000", Some((2000, n - 1))).await;
    range_check(ctx, &repo, &big, "bytes=5000-10000", None).await;
    check!(ctx, C, "GET on a blob with an invalid Range (bytes=500-0) answers 416, or ignores it (200, whole blob)", {
        let r = ctx
            .client
            .request(Method::GET, &ctx.blob_path(&repo, &big.digest))
            .header("Range", "bytes=500-0")
            .send()
            .await?;
        status(&r, &[416, 200])?;
        if let (416, Some(e)) = (r.status, &r.body_error) {
            return Ok(format!("the 416's body broke off: {e}"));
        }
        if r.status == 200 {
            body_is(&r, &big.bytes)?;
            return Ok("invalid Range ignored (200 with the whole blob)".into());
        }
        Ok(String::new())
    });

    // Manifests.
    check!(ctx, C, "HEAD on a nonexistent manifest answers 404", {
        let r = ctx
            .client
            .request(Method::HEAD, &ctx.manifest_path(&repo, "nonexistent-tag"))
            .accept_manifests()
            .send()
            .await?;
        status(&r, &[404])?;
        body_empty(&r)?;
        Ok(String::new())
    });
    for (name, reference, m) in [
        (
            "HEAD on a manifest by digest answers 200 with Content-Type, Content-Length and its digest, no body",
            m0.digest.clone(),
            &m0,
        ),
        ("HEAD on a manifest pushed by digest answers 200 with its headers", m1.digest.clone(), &m1),
        ("HEAD on a manifest by tag answers 200 with the tagged manifest's headers", tag.clone(), &m0),
    ] {
        check!(ctx, C, name, {
            let r = ctx
                .client
                .request(Method::HEAD, &ctx.manifest_path(&repo, &reference))
                .accept_manifests()
                .send()
                .await?;
            status(&r, &[200])?;
            content_type_is(&r, &m.media_type)?;
            content_length_is(&r, m.len())?;
            digest_header_if_present(&r, &m.digest)?;
            body_empty(&r)?;
            Ok(String::new())
        });
    }
    check!(
        ctx,
        C,
        "GET and HEAD on a manifest under an invalid tag (-invalid) answer 404 (no manifest can have it); a GET body says MANIFEST_UNKNOWN",
        {
            let path = ctx.manifest_path(&repo, "-invalid");
            let r = ctx.client.request(Method::HEAD, &path).accept_manifests().send().await?;
            status(&r, &[404]).context("HEAD")?;
            let r = ctx.client.request(Method::GET, &path).accept_manifests().send().await?;
            spec_error(&r, &[404], "MANIFEST_UNKNOWN").context("GET")?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a nonexistent tag answers 404 MANIFEST_UNKNOWN",
        {
            let r = ctx
                .client
                .request(
                    Method::GET,
                    &ctx.manifest_path(&repo, &format!("missing-{}", data::random_id())),
                )
                .accept_manifests()
                .send()
                .await?;
            spec_error(&r, &[404], "MANIFEST_UNKNOWN")?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a nonexistent manifest digest answers 404 MANIFEST_UNKNOWN",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &missing))
                .accept_manifests()
                .send()
                .await?;
            spec_error(&r, &[404], "MANIFEST_UNKNOWN")?;
            Ok(String::new())
        }
    );
    for (name, reference, m) in [
        (
            "GET on a manifest by digest answers 200 with the exact bytes, media type and digest",
            m0.digest.clone(),
            &m0,
        ),
        (
            "GET on a manifest pushed by digest answers 200 with the exact bytes",
            m1.digest.clone(),
            &m1,
        ),
        (
            "GET on a manifest by tag answers 200 with the tagged manifest's exact bytes",
            tag.clone(),
            &m0,
        ),
    ] {
        check!(ctx, C, name, {
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &reference))
                .accept_manifests()
                .send()
                .await?;
            status(&r, &[200])?;
            body_is(&r, &m.bytes)?;
            content_type_is(&r, &m.media_type)?;
            content_length_is(&r, m.len())?;
            digest_header_if_present(&r, &m.digest)?;
            Ok(String::new())
        });
    }
    check!(ctx, C, "HEAD and GET on a manifest agree on Content-Type, Content-Length and Docker-Content-Digest", {
        let path = ctx.manifest_path(&repo, &tag);
        let h = ctx.client.request(Method::HEAD, &path).accept_manifests().send().await?;
        let g = ctx.client.request(Method::GET, &path).accept_manifests().send().await?;
        status(&h, &[200])?;
        status(&g, &[200])?;
        same_header(&h, &g, "content-type")?;
        same_header(&h, &g, "content-length")?;
        same_header(&h, &g, "docker-content-digest")?;
        Ok(String::new())
    });

    // Error codes.
    check!(ctx, C, "GET on a malformed manifest digest (sha256:totallywrong) answers 400 or 404; a 400 carries a spec error code", {
        let r = ctx
            .client
            .request(Method::GET, &ctx.manifest_path(&repo, "sha256:totallywrong"))
            .accept_manifests()
            .send()
            .await?;
        status(&r, &[400, 404])?;
        if r.status == 400 {
            let code = error_code_known(&r)?;
            return Ok(format!("400 {code}"));
        }
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "GET on a blob with a malformed digest answers 400 or 404; a 400 carries a spec error code",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.blob_path(&repo, "sha256:totallywrong"))
                .send()
                .await?;
            status(&r, &[400, 404])?;
            if r.status == 400 {
                let code = error_code_known(&r)?;
                return Ok(format!("400 {code}"));
            }
            Ok(String::new())
        }
    );
    check!(ctx, C, "GET on a manifest in a repository that does not exist answers 404 NAME_UNKNOWN or MANIFEST_UNKNOWN", {
        let other = format!("{repo}/missing-{}", data::random_id());
        let r = ctx
            .client
            .request(Method::GET, &ctx.manifest_path(&other, "latest"))
            .accept_manifests()
            .send()
            .await?;
        status(&r, &[404])?;
        error_code_any(&r, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])?;
        Ok(String::new())
    });

    ctx.teardown(C, &repo, &[&m0, &m1], &[&cfg0, &cfg1, &layer, &big])
        .await;
}

/// Both responses carry `name` with the same value, or neither does.
fn same_header(h: &Response, g: &Response, name: &str) -> anyhow::Result<()> {
    let (a, b) = (h.header(name), g.header(name));
    ensure!(
        a == b,
        "header {name} differs: HEAD has {a:?}, GET has {b:?}"
    );
    Ok(())
}

/// A blob GET with a `Range` header: `Some((first, last))` expects 206 with exactly those bytes
/// (inclusive), `None` expects 416.
async fn range_check(
    ctx: &mut Ctx,
    repo: &str,
    blob: &Blob,
    range: &str,
    expect: Option<(usize, usize)>,
) {
    let name = match expect {
        Some((a, b)) => format!("GET on a blob with Range: {range} answers 206 with bytes {a}-{b} and a matching Content-Range"),
        None => format!("GET on a blob with an unsatisfiable Range: {range} answers 416"),
    };
    check!(ctx, C, &name, {
        let r = ctx
            .client
            .request(Method::GET, &ctx.blob_path(repo, &blob.digest))
            .header("Range", range)
            .send()
            .await?;
        match expect {
            None => {
                status(&r, &[416])?;
                if let Some(e) = &r.body_error {
                    return Ok(format!("the 416's body broke off: {e}"));
                }
            }
            Some((first, last)) => {
                if r.status == 200 {
                    bail!("Range ignored: answered 200 with the whole blob instead of 206");
                }
                status(&r, &[206])?;
                let cr = header(&r, "content-range")?;
                let full = format!("bytes {first}-{last}/{}", blob.len());
                let star = format!("bytes {first}-{last}/*");
                ensure!(
                    cr == full || cr == star,
                    "Content-Range is {cr:?}, expected {full:?}"
                );
                content_length_is(&r, last - first + 1)?;
                body_is(&r, &blob.bytes[first..=last])?;
            }
        }
        Ok(String::new())
    });
}
