//! Push: blob uploads (streamed, monolithic POST and POST+PUT, chunked with Content-Range,
//! upload status and cancel), cross-repository mounts, manifest and index uploads by tag and
//! by digest, refusals of bad digests, bad manifests and manifests with missing blobs, and
//! sha512 content.

use anyhow::{anyhow, ensure, Context};
use reqwest::{Method, Url};

use super::*;
use crate::data::{self, Algorithm, Blob, Extras, MT_OCTET_STREAM};

const C: Category = Category::Push;

pub(super) async fn run(ctx: &mut Ctx) {
    let repo = ctx.repo.clone();
    let mrepo = ctx.mount_repo.clone();
    let streamed = data::opaque(42);
    let cfg = data::image_config();
    let layer = data::layer(1536);
    let empty = data::empty_json();
    let mount_missing = data::opaque(64);
    let b512 = Blob::with_algorithm(data::random_bytes(300), MT_OCTET_STREAM, Algorithm::Sha512);
    let mut cleanup_blobs: Vec<Blob> = vec![
        streamed.clone(),
        cfg.clone(),
        layer.clone(),
        empty.clone(),
        b512.clone(),
    ];

    // --- Streamed upload -------------------------------------------------------------------
    let mut loc: Option<Url> = None;
    check!(
        ctx,
        C,
        "POST /blobs/uploads/ answers 202 with a Location (upload session)",
        {
            let r = ctx.start_upload(&repo).await?;
            loc = Some(r.location()?);
            Ok(String::new())
        }
    );
    check!(ctx, C, "PATCH with the whole blob as the body (streamed upload) answers 202 with a Location (and a matching Range if sent)", {
        let url = loc.take().ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
        let r = ctx
            .client
            .request_url(Method::PATCH, url)
            .header("Content-Type", MT_OCTET_STREAM)
            .body(streamed.bytes.clone())
            .send()
            .await?;
        status(&r, &[202])?;
        if r.header("range").is_some() {
            header_is(&r, "range", &format!("0-{}", streamed.len() - 1))?;
        }
        loc = Some(r.location()?);
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "PUT ?digest= without a body closes a streamed upload: 201 with the blob's Location",
        {
            let url = loc
                .take()
                .ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
            let r = ctx
                .client
                .request_url(Method::PUT, url)
                .query("digest", &streamed.digest)
                .header("Content-Type", MT_OCTET_STREAM)
                .send()
                .await?;
            status(&r, &[201])?;
            digest_header_if_present(&r, &streamed.digest)?;
            verify_blob_location(ctx, &r, &streamed).await?;
            Ok(String::new())
        }
    );

    // --- Monolithic uploads ------------------------------------------------------------------
    check!(ctx, C, "GET on a blob not pushed yet answers 404", {
        let r = ctx
            .client
            .request(Method::GET, &ctx.blob_path(&repo, &cfg.digest))
            .send()
            .await?;
        status(&r, &[404])?;
        Ok(String::new())
    });
    check!(ctx, C, "POST ?digest= with the blob as the body uploads it in one request (201; 202 = unsupported, blob not stored)", {
        let r = ctx
            .client
            .request(Method::POST, &ctx.uploads_path(&repo))
            .query("digest", &cfg.digest)
            .header("Content-Type", MT_OCTET_STREAM)
            .body(cfg.bytes.clone())
            .send()
            .await?;
        status(&r, &[201, 202])?;
        r.location()?;
        let get = ctx
            .client
            .request(Method::GET, &ctx.blob_path(&repo, &cfg.digest))
            .send()
            .await?;
        if r.status == 202 {
            status(&get, &[404]).context("after a 202 the blob must not exist yet")?;
            return Ok("single-request upload not supported (202 opened a session instead)".into());
        }
        digest_header_if_present(&r, &cfg.digest)?;
        status(&get, &[200])?;
        body_is(&get, &cfg.bytes)?;
        Ok(String::new())
    });
    check!(ctx, C, "POST opens an upload session, PUT ?digest= with the blob as the body completes it: 201 with the blob's Location", {
        let post = ctx.start_upload(&repo).await?;
        let r = ctx
            .client
            .request_url(Method::PUT, post.location()?)
            .query("digest", &cfg.digest)
            .header("Content-Type", MT_OCTET_STREAM)
            .body(cfg.bytes.clone())
            .send()
            .await?;
        status(&r, &[201])?;
        digest_header_if_present(&r, &cfg.digest)?;
        verify_blob_location(ctx, &r, &cfg).await?;
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "GET on the uploaded blob answers 200 with its content",
        {
            ctx.get_blob_expect(&repo, &cfg).await?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "POST then PUT ?digest= uploads a layer blob: 201",
        {
            ctx.push_blob(&repo, &layer).await?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on the uploaded layer answers 200 with its content",
        {
            ctx.get_blob_expect(&repo, &layer).await?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT ?digest= with a digest that does not match the content is refused: 400 DIGEST_INVALID",
        {
            let body = data::random_bytes(100);
            let claimed = data::unknown_digest();
            let post = ctx.start_upload(&repo).await?;
            let r = ctx
                .client
                .request_url(Method::PUT, post.location()?)
                .query("digest", &claimed)
                .header("Content-Type", MT_OCTET_STREAM)
                .body(body)
                .send()
                .await?;
            spec_error(&r, &[400], "DIGEST_INVALID")?;
            let head = ctx
                .client
                .request(Method::HEAD, &ctx.blob_path(&repo, &claimed))
                .send()
                .await?;
            status(&head, &[404]).context("the refused blob must not be stored")?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "the empty JSON blob {} can be pushed (201) and fetched",
        {
            ctx.push_blob(&repo, &empty).await?;
            ctx.get_blob_expect(&repo, &empty).await?;
            Ok(String::new())
        }
    );
    let mut cancelled: Option<Url> = None;
    check!(ctx, C, "DELETE on an upload session cancels it: 204", {
        let post = ctx.start_upload(&repo).await?;
        let url = post.location()?;
        let r = ctx
            .client
            .request_url(Method::DELETE, url.clone())
            .send()
            .await?;
        status(&r, &[204])?;
        cancelled = Some(url);
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "GET on a cancelled upload session answers 404 BLOB_UPLOAD_UNKNOWN",
        {
            let url = cancelled
                .take()
                .ok_or_else(|| anyhow!("no cancelled session: the previous check failed"))?;
            let r = ctx.client.request_url(Method::GET, url).send().await?;
            spec_error(&r, &[404], "BLOB_UPLOAD_UNKNOWN")?;
            Ok(String::new())
        }
    );

    // --- Chunked uploads ---------------------------------------------------------------------
    let mut min_chunk: usize = 0;
    check!(ctx, C, "PATCH of an out-of-order chunk (Content-Range not starting at the upload's offset) is refused: 416", {
        let post = ctx.start_upload(&repo).await?;
        if let Some(v) = post.header("oci-chunk-min-length") {
            min_chunk = v.trim().parse().unwrap_or(0);
        }
        let size = chunked_size(min_chunk);
        let chunk = data::random_bytes(size - size / 2 - 1);
        let start = size / 2 + 1;
        let r = ctx
            .client
            .request_url(Method::PATCH, post.location()?)
            .header("Content-Type", MT_OCTET_STREAM)
            .header("Content-Range", format!("{start}-{}", size - 1))
            .body(chunk)
            .send()
            .await?;
        status(&r, &[416])?;
        Ok(String::new())
    });
    let size = chunked_size(min_chunk);
    let split = size / 2 + 1;
    let chunked = data::opaque(size);
    let (c1, c2) = chunked.bytes.split_at(split);
    let (c1, c2) = (c1.to_vec(), c2.to_vec());
    let r1 = format!("0-{}", split - 1);
    let r2 = format!("{split}-{}", size - 1);
    let r_all = format!("0-{}", size - 1);
    cleanup_blobs.push(chunked.clone());

    check!(
        ctx,
        C,
        "PATCH of the first chunk with Content-Range answers 202 with Location and Range 0-<end>",
        {
            let post = ctx.start_upload(&repo).await?;
            let r = patch_chunk(ctx, post.location()?, &c1, &r1).await?;
            status(&r, &[202])?;
            header_is(&r, "range", &r1)?;
            loc = Some(r.location()?);
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on an upload session reports its progress: 204 with Location and Range 0-<end>",
        {
            let url = loc
                .take()
                .ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
            let r = ctx.client.request_url(Method::GET, url).send().await?;
            status(&r, &[204])?;
            header_is(&r, "range", &r1)?;
            loc = Some(r.location()?);
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PATCH of the next chunk answers 202 with Location and Range 0-<end of both chunks>",
        {
            let url = loc
                .take()
                .ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
            let r = patch_chunk(ctx, url, &c2, &r2).await?;
            status(&r, &[202])?;
            header_is(&r, "range", &r_all)?;
            loc = Some(r.location()?);
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT ?digest= without a body closes a chunked upload: 201 with the blob's Location",
        {
            let url = loc
                .take()
                .ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
            let r = ctx
                .client
                .request_url(Method::PUT, url)
                .query("digest", &chunked.digest)
                .header("Content-Type", MT_OCTET_STREAM)
                .send()
                .await?;
            status(&r, &[201])?;
            digest_header_if_present(&r, &chunked.digest)?;
            verify_blob_location(ctx, &r, &chunked).await?;
            Ok(String::new())
        }
    );
    check!(ctx, C, "PATCH re-sending a chunk the upload already has (Content-Range 0-<end> again) is refused: 416", {
        let post = ctx.start_upload(&repo).await?;
        let r = patch_chunk(ctx, post.location()?, &c1, &r1).await?;
        status(&r, &[202]).context("precondition: the first PATCH")?;
        let again = patch_chunk(ctx, r.location()?, &c1, &r1).await?;
        status(&again, &[416])?;
        Ok(String::new())
    });
    check!(ctx, C, "GET on an upload session through the Location of its POST (not the latest) reports its progress: 204, Range 0-<end>", {
        let post = ctx.start_upload(&repo).await?;
        let first = post.location()?;
        let r = patch_chunk(ctx, first.clone(), &c1, &r1).await?;
        status(&r, &[202]).context("precondition: the first PATCH")?;
        let g = ctx.client.request_url(Method::GET, first).send().await?;
        status(&g, &[204])?;
        g.location()?;
        header_is(&g, "range", &r1)?;
        Ok(String::new())
    });
    let chunked_put = data::opaque(size);
    cleanup_blobs.push(chunked_put.clone());
    check!(
        ctx,
        C,
        "PUT ?digest= carrying the last chunk (with Content-Range) completes a chunked upload: 201",
        {
            let (p1, p2) = chunked_put.bytes.split_at(split);
            let post = ctx.start_upload(&repo).await?;
            let r = patch_chunk(ctx, post.location()?, p1, &r1).await?;
            status(&r, &[202]).context("precondition: the first PATCH")?;
            let put = ctx
                .client
                .request_url(Method::PUT, r.location()?)
                .query("digest", &chunked_put.digest)
                .header("Content-Type", MT_OCTET_STREAM)
                .header("Content-Range", r2.clone())
                .body(p2.to_vec())
                .send()
                .await?;
            status(&put, &[201])?;
            verify_blob_location(ctx, &put, &chunked_put).await?;
            Ok(String::new())
        }
    );

    // --- Cross-repository mount --------------------------------------------------------------
    check!(ctx, C, "POST ?mount=<digest> without from answers 202 with an upload session in the target repository", {
        let r = ctx
            .client
            .request(Method::POST, &ctx.uploads_path(&mrepo))
            .query("mount", &data::unknown_digest())
            .send()
            .await?;
        status(&r, &[202])?;
        upload_location_in(&r, &mrepo)?;
        Ok(String::new())
    });
    check!(ctx, C, "POST ?mount=&from= mounts a blob of another repository: 201 with the blob's Location (or 202 to upload it instead)", {
        ensure_blob(ctx, &repo, &streamed).await?;
        let r = ctx
            .client
            .request(Method::POST, &ctx.uploads_path(&mrepo))
            .query("mount", &streamed.digest)
            .query("from", &repo)
            .send()
            .await?;
        status(&r, &[201, 202])?;
        if r.status == 201 {
            let l = r.location()?;
            let want = format!("/v2/{mrepo}/blobs/{}", streamed.digest);
            let got = l.path().replace("%3A", ":").replace("%3a", ":");
            ensure!(got == want, "Location is {}, expected {want}", l.path());
            digest_header_if_present(&r, &streamed.digest)?;
            return Ok(String::new());
        }
        let up = upload_location_in(&r, &mrepo)?;
        let put = ctx
            .client
            .request_url(Method::PUT, up)
            .query("digest", &streamed.digest)
            .header("Content-Type", MT_OCTET_STREAM)
            .body(streamed.bytes.clone())
            .send()
            .await?;
        status(&put, &[201]).context("completing the fallback upload")?;
        Ok("mount not performed (202); the blob was uploaded through the session instead".into())
    });
    check!(
        ctx,
        C,
        "GET on the mounted blob in the target repository answers 200 with its content",
        {
            ctx.get_blob_expect(&mrepo, &streamed).await?;
            Ok(String::new())
        }
    );
    let mut fallback: Option<Url> = None;
    check!(ctx, C, "POST ?mount=&from= for a blob the source repository lacks falls back to a new upload session: 202", {
        let r = ctx
            .client
            .request(Method::POST, &ctx.uploads_path(&mrepo))
            .query("mount", &mount_missing.digest)
            .query("from", &repo)
            .send()
            .await?;
        status(&r, &[202])?;
        fallback = Some(upload_location_in(&r, &mrepo)?);
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "the upload session of a failed mount accepts the blob: PUT ?digest= answers 201",
        {
            let url = fallback
                .take()
                .ok_or_else(|| anyhow!("no upload session: the previous check failed"))?;
            let r = ctx
                .client
                .request_url(Method::PUT, url)
                .query("digest", &mount_missing.digest)
                .header("Content-Type", MT_OCTET_STREAM)
                .body(mount_missing.bytes.clone())
                .send()
                .await?;
            status(&r, &[201])?;
            ctx.get_blob_expect(&mrepo, &mount_missing).await?;
            Ok(String::new())
        }
    );

    // --- Manifest upload ---------------------------------------------------------------------
    let manifest = data::image_manifest(
        &cfg,
        &[&layer],
        &Extras {
            unknown_field: true,
            ..Extras::default()
        },
    );
    let no_layers = data::image_manifest(&cfg, &[], &Extras::default());
    let by_digest = data::image_manifest(
        &cfg,
        &[&layer],
        &Extras {
            annotations: vec![(
                "org.opencontainers.conformance.test".into(),
                data::random_id(),
            )],
            ..Extras::default()
        },
    );
    let index = data::image_index(&[&manifest, &by_digest], &Extras::default());
    let m512 = data::image_manifest_with(&cfg, &[&layer], &Extras::default(), Algorithm::Sha512);
    let tags: Vec<String> = (0..4).map(|i| ctx.tag(&format!("push{i}"))).collect();

    check!(
        ctx,
        C,
        "GET on a manifest not pushed yet answers 404 MANIFEST_UNKNOWN",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &tags[0]))
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
        "setup: the config and layer blobs the manifests reference are in the repository",
        {
            ensure_blob(ctx, &repo, &cfg).await?;
            ensure_blob(ctx, &repo, &layer).await?;
            Ok(String::new())
        }
    );
    let mut manifest_loc: Option<Url> = None;
    check!(
        ctx,
        C,
        "PUT of a manifest by tag answers 201 with a Location (4 tags, same manifest)",
        {
            for t in &tags {
                let r = ctx.push_manifest(&repo, t, &manifest).await?;
                manifest_loc = Some(r.location()?);
                digest_header_if_present(&r, &manifest.digest)?;
            }
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on the Location of a manifest PUT answers 200 with the exact bytes",
        {
            let url = manifest_loc
                .take()
                .ok_or_else(|| anyhow!("no Location: the previous check failed"))?;
            let r = ctx
                .client
                .request_url(Method::GET, url)
                .accept_manifests()
                .send()
                .await?;
            status(&r, &[200])?;
            body_is(&r, &manifest.bytes)?;
            content_type_is(&r, &manifest.media_type)?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT of an image manifest with no layers answers 201",
        {
            let r = ctx
                .push_manifest(&repo, &ctx.tag("emptylayer"), &no_layers)
                .await?;
            r.location()?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT of a manifest by digest answers 201 with a Location",
        {
            let r = ctx
                .push_manifest(&repo, &by_digest.digest, &by_digest)
                .await?;
            r.location()?;
            digest_header_if_present(&r, &by_digest.digest)?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a manifest by digest answers 200 with the exact bytes and media type",
        {
            for m in [&manifest, &by_digest] {
                let r = ctx
                    .client
                    .request(Method::GET, &ctx.manifest_path(&repo, &m.digest))
                    .accept_manifests()
                    .send()
                    .await?;
                status(&r, &[200])?;
                body_is(&r, &m.bytes)?;
                content_type_is(&r, &m.media_type)?;
                digest_header_if_present(&r, &m.digest)?;
            }
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT of an image index by tag answers 201, and GET serves it with the index media type",
        {
            let t = ctx.tag("index");
            ctx.push_manifest(&repo, &t, &index).await?;
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &t))
                .accept_manifests()
                .send()
                .await?;
            status(&r, &[200])?;
            body_is(&r, &index.bytes)?;
            content_type_is(&r, data::MT_OCI_INDEX)?;
            digest_header_if_present(&r, &index.digest)?;
            Ok(String::new())
        }
    );
    check!(ctx, C, "PUT of a manifest under a digest that does not match its bytes is refused: 400 DIGEST_INVALID (or MANIFEST_INVALID)", {
        let m = data::image_manifest(&cfg, &[&layer], &Extras {
            annotations: vec![("org.opencontainers.conformance.test".into(), data::random_id())],
            ..Extras::default()
        });
        let wrong = data::unknown_digest();
        let r = put_manifest_raw(ctx, &repo, &wrong, &m.media_type, m.bytes.clone()).await?;
        status(&r, &[400])?;
        error_code_any(&r, &["DIGEST_INVALID", "MANIFEST_INVALID"])?;
        Ok(String::new())
    });
    check!(ctx, C, "PUT of a manifest referencing a layer the repository lacks is refused: 400 MANIFEST_BLOB_UNKNOWN", {
        let ghost = data::layer(128);
        let m = data::image_manifest(&cfg, &[&layer, &ghost], &Extras::default());
        let r = put_manifest_raw(ctx, &repo, &ctx.tag("missing-layer"), &m.media_type, m.bytes.clone()).await?;
        spec_error(&r, &[400], "MANIFEST_BLOB_UNKNOWN")?;
        Ok(String::new())
    });
    check!(ctx, C, "PUT of a manifest whose config blob the repository lacks is refused: 400 MANIFEST_BLOB_UNKNOWN", {
        let ghost_cfg = data::image_config();
        let m = data::image_manifest(&ghost_cfg, &[&layer], &Extras::default());
        let r = put_manifest_raw(ctx, &repo, &m.digest, &m.media_type, m.bytes.clone()).await?;
        spec_error(&r, &[400], "MANIFEST_BLOB_UNKNOWN")?;
        Ok(String::new())
    });
    check!(
        ctx,
        C,
        "PUT of a body that is not a manifest is refused: 400 MANIFEST_INVALID",
        {
            let r = put_manifest_raw(
                ctx,
                &repo,
                &ctx.tag("invalid"),
                data::MT_OCI_MANIFEST,
                b"blablabla".to_vec(),
            )
            .await?;
            spec_error(&r, &[400], "MANIFEST_INVALID")?;
            Ok(String::new())
        }
    );
    check!(ctx, C, "PUT of an invalid manifest under a malformed digest (sha256:totallywrong) answers 400 or 404; a 400 carries a spec error code", {
        let r = put_manifest_raw(
            ctx,
            &repo,
            "sha256:totallywrong",
            data::MT_OCI_MANIFEST,
            b"blablabla".to_vec(),
        )
        .await?;
        status(&r, &[400, 404])?;
        if r.status == 400 {
            return Ok(format!("400 {}", error_code_known(&r)?));
        }
        Ok(String::new())
    });

    // --- sha512 ------------------------------------------------------------------------------
    check!(
        ctx,
        C,
        "POST then PUT ?digest=sha512:... uploads a sha512 blob: 201",
        {
            ctx.push_blob(&repo, &b512).await?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "HEAD on a sha512 blob answers 200 with its Content-Length and digest",
        {
            let r = ctx
                .client
                .request(Method::HEAD, &ctx.blob_path(&repo, &b512.digest))
                .send()
                .await?;
            status(&r, &[200])?;
            content_length_is(&r, b512.len())?;
            digest_header_if_present(&r, &b512.digest)?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a sha512 blob answers 200 with its content",
        {
            ctx.get_blob_expect(&repo, &b512).await?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "PUT of a manifest under its sha512 digest answers 201",
        {
            let r = ctx.push_manifest(&repo, &m512.digest, &m512).await?;
            r.location()?;
            digest_header_if_present(&r, &m512.digest)?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "GET on a manifest by sha512 digest answers 200 with the exact bytes",
        {
            let r = ctx
                .client
                .request(Method::GET, &ctx.manifest_path(&repo, &m512.digest))
                .accept_manifests()
                .send()
                .await?;
            status(&r, &[200])?;
            body_is(&r, &m512.bytes)?;
            digest_header_if_present(&r, &m512.digest)?;
            Ok(String::new())
        }
    );

    // --- distribution-spec 1.2: ?tag= on a push by digest, ?digest= on a push by tag ------------
    let tagged = data::image_manifest(&cfg, &[&layer], &Extras {
        annotations: vec![("org.opencontainers.conformance.tagged".into(), data::random_id())],
        ..Extras::default()
    });
    check!(ctx, C, "PUT of a manifest by digest with ?tag=a&tag=b answers 201 with one OCI-Tag header per tag, and each tag serves it", {
        let (a, b) = (ctx.tag("qtag-a"), ctx.tag("qtag-b"));
        let r = ctx
            .client
            .request(Method::PUT, &ctx.manifest_path(&repo, &tagged.digest))
            .query("tag", &a)
            .query("tag", &b)
            .header("Content-Type", tagged.media_type.clone())
            .body(tagged.bytes.clone())
            .send()
            .await?;
        status(&r, &[201])?;
        let mut got: Vec<&str> = r.header_all("oci-tag");
        got.sort_unstable();
        let mut want = vec![a.as_str(), b.as_str()];
        want.sort_unstable();
        ensure!(got == want, "OCI-Tag headers are {got:?}, expected {want:?}");
        for t in [&a, &b] {
            let r = ctx.client.request(Method::GET, &ctx.manifest_path(&repo, t)).accept_manifests().send().await?;
            status(&r, &[200]).with_context(|| format!("GET by tag {t}"))?;
            body_is(&r, &tagged.bytes)?;
        }
        Ok(String::new())
    });
    let m512_tagged = {
        let m = data::image_manifest(&cfg, &[&layer], &Extras {
            annotations: vec![("org.opencontainers.conformance.sha512-tag".into(), data::random_id())],
            ..Extras::default()
        });
        Blob::with_algorithm(m.bytes, &m.media_type, Algorithm::Sha512)
    };
    check!(ctx, C, "PUT of a manifest by tag with ?digest=sha512:... answers 201 with that Docker-Content-Digest, and GET by tag serves it with it", {
        let t = ctx.tag("sha512-tag");
        let r = ctx
            .client
            .request(Method::PUT, &ctx.manifest_path(&repo, &t))
            .query("digest", &m512_tagged.digest)
            .header("Content-Type", m512_tagged.media_type.clone())
            .body(m512_tagged.bytes.clone())
            .send()
            .await?;
        status(&r, &[201])?;
        header_is(&r, "docker-content-digest", &m512_tagged.digest)?;
        let r = ctx.client.request(Method::GET, &ctx.manifest_path(&repo, &t)).accept_manifests().send().await?;
        status(&r, &[200])?;
        body_is(&r, &m512_tagged.bytes)?;
        header_is(&r, "docker-content-digest", &m512_tagged.digest)?;
        Ok(String::new())
    });

    // --- Non-distributable layers (Windows base images) ------------------------------------
    let foreign = {
        let absent = data::sha256(&data::random_bytes(64));
        let mut m = serde_json::Map::new();
        m.insert("schemaVersion".into(), serde_json::json!(2));
        m.insert("mediaType".into(), serde_json::json!(data::MT_OCI_MANIFEST));
        m.insert("config".into(), cfg.descriptor());
        m.insert(
            "layers".into(),
            serde_json::json!([{
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": absent,
                "size": 1000,
                "urls": [format!("https://example.com/layers/{absent}")],
            }, layer.descriptor()]),
        );
        Blob::new(serde_json::to_vec_pretty(&serde_json::Value::Object(m)).unwrap_or_default(), data::MT_OCI_MANIFEST)
    };
    check!(ctx, C, "PUT of a manifest whose non-distributable layer (with urls) the repository lacks answers 201, as distribution accepts it", {
        let r = put_manifest_raw(ctx, &repo, &ctx.tag("foreign"), &foreign.media_type, foreign.bytes.clone()).await?;
        status(&r, &[201])?;
        Ok(String::new())
    });

    // --- Teardown ----------------------------------------------------------------------------
    // The mount target's copies; failures here show up in the main teardown's answers anyway.
    for b in [&streamed, &mount_missing] {
        let _ = ctx.cleanup(&ctx.blob_path(&mrepo, &b.digest)).await;
    }
    let blobs: Vec<&Blob> = cleanup_blobs.iter().collect();
    ctx.teardown(
        C,
        &repo,
        &[&index, &manifest, &no_layers, &by_digest, &m512, &tagged, &m512_tagged, &foreign],
        &blobs,
    )
    .await;
}

/// Size of the blob for chunked uploads: 42 bytes, or enough for two chunks of the registry's
/// `OCI-Chunk-Min-Length`.
fn chunked_size(min_chunk: usize) -> usize {
    let split_default = 42 / 2 + 1;
    if min_chunk > split_default {
        min_chunk * 2 - 2
    } else {
        42
    }
}

async fn patch_chunk(ctx: &Ctx, url: Url, chunk: &[u8], range: &str) -> anyhow::Result<Response> {
    ctx.client
        .request_url(Method::PATCH, url)
        .header("Content-Type", MT_OCTET_STREAM)
        .header("Content-Range", range)
        .body(chunk.to_vec())
        .send()
        .await
}

async fn put_manifest_raw(
    ctx: &Ctx,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<Response> {
    ctx.client
        .request(Method::PUT, &ctx.manifest_path(repo, reference))
        .header("Content-Type", media_type)
        .body(body)
        .send()
        .await
}

/// The `Location` of a completed upload names the blob, and GET on it returns the content.
async fn verify_blob_location(ctx: &Ctx, r: &Response, blob: &Blob) -> anyhow::Result<()> {
    let l = r.location()?;
    let g = ctx
        .client
        .request_url(Method::GET, l.clone())
        .send()
        .await?;
    status(&g, &[200]).context("GET on the Location of the uploaded blob")?;
    body_is(&g, &blob.bytes)?;
    Ok(())
}

/// The `Location` of a 202 is an upload session of `repo`.
fn upload_location_in(r: &Response, repo: &str) -> anyhow::Result<Url> {
    let l = r.location()?;
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    ensure!(
        l.path().starts_with(&prefix),
        "Location {} is not an upload session under {prefix}",
        l.path()
    );
    Ok(l)
}

/// Pushes `blob` unless HEAD finds it already: earlier checks may have failed to store it.
async fn ensure_blob(ctx: &Ctx, repo: &str, blob: &Blob) -> anyhow::Result<()> {
    let h = ctx
        .client
        .request(Method::HEAD, &ctx.blob_path(repo, &blob.digest))
        .send()
        .await?;
    if h.status != 200 {
        ctx.push_blob(repo, blob)
            .await
            .with_context(|| format!("setup: pushing {}", short(&blob.digest)))?;
    }
    Ok(())
}
