//! Content discovery: the tag list with `n`/`last` pagination and its `Link` header, and the
//! referrers API (`OCI-Subject` on PUT, the referrers index, the `artifactType` filter, an
//! empty index for unknown subjects).

use anyhow::{anyhow, bail, ensure, Context};
use reqwest::Method;
use serde_json::Value;

use super::*;
use crate::data::{self, Blob, Extras, MT_OCI_INDEX};

const C: Category = Category::Discovery;
const ANNOTATION: &str = "org.opencontainers.conformance.test";

pub(super) async fn run(ctx: &mut Ctx) {
    let repo = ctx.repo.clone();
    let cfg = data::image_config();
    let layer = data::layer(512);
    let tagged = data::image_manifest(&cfg, &[&layer], &Extras::default());
    let tags: Vec<String> = (0..4).map(|i| ctx.tag(&format!("disc{i}"))).collect();

    check!(ctx, C, "setup: push a manifest under 4 tags", {
        ctx.push_blob(&repo, &cfg).await?;
        ctx.push_blob(&repo, &layer).await?;
        for t in &tags {
            ctx.push_manifest(&repo, t, &tagged).await?;
        }
        Ok(String::new())
    });

    // --- Tag list ----------------------------------------------------------------------------
    let mut all: Vec<String> = Vec::new();
    check!(
        ctx,
        C,
        "GET tags/list answers 200 with the repository name and every pushed tag",
        {
            let r = ctx
                .client
                .request(Method::GET, &tags_path(&repo))
                .send()
                .await?;
            status(&r, &[200])?;
            let list = parse_tag_list(&r, &repo)?;
            for t in &tags {
                ensure!(list.contains(t), "tag {t} missing from {list:?}");
            }
            all = list;
            Ok(String::new())
        }
    );
    check!(ctx, C, "tags/list is in lexical order", {
        ensure!(!all.is_empty(), "no tag list: the previous check failed");
        ensure!(is_lexical(&all), "tags are not in lexical order: {all:?}");
        Ok(String::new())
    });
    // Pages are compared against the registry's own order when it is lexical (bytewise or
    // case-insensitive, both fit the spec's wording), else against a bytewise sort.
    let sorted = if is_lexical(&all) {
        all.clone()
    } else {
        let mut s = all.clone();
        s.sort();
        s
    };
    let k = (sorted.len() / 2).max(1);
    let mut link: Option<String> = None;
    check!(
        ctx,
        C,
        "tags/list?n=<k> answers the first k tags in lexical order",
        {
            ensure!(sorted.len() >= 2, "no tag list: an earlier check failed");
            let r = ctx
                .client
                .request(Method::GET, &tags_path(&repo))
                .query("n", &k.to_string())
                .send()
                .await?;
            status(&r, &[200])?;
            let page = parse_tag_list(&r, &repo)?;
            ensure!(
                page == sorted[..k],
                "n={k} answered {page:?}, expected {:?}",
                &sorted[..k]
            );
            link = r.header("link").map(str::to_string);
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "tags/list?n=<k> with more tags left carries a Link header with rel=\"next\"",
        {
            let l = link
                .clone()
                .ok_or_else(|| anyhow!("no Link header (or the previous check failed)"))?;
            next_link(&l)?;
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "tags/list?n=<k>&last=<tag> answers the tags after <tag>, at most k",
        {
            ensure!(sorted.len() >= 2, "no tag list: an earlier check failed");
            let last = &sorted[k - 1];
            let r = ctx
                .client
                .request(Method::GET, &tags_path(&repo))
                .query("n", &k.to_string())
                .query("last", last)
                .send()
                .await?;
            status(&r, &[200])?;
            let page = parse_tag_list(&r, &repo)?;
            let end = (2 * k).min(sorted.len());
            ensure!(
                page == sorted[k..end],
                "n={k}&last={last} answered {page:?}, expected {:?}",
                &sorted[k..end]
            );
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "following the Link header answers the next page of tags",
        {
            let l = link
                .clone()
                .ok_or_else(|| anyhow!("no Link header (or an earlier check failed)"))?;
            let target = next_link(&l)?;
            let url = ctx.client.url(&target)?;
            let r = ctx.client.request_url(Method::GET, url).send().await?;
            status(&r, &[200])?;
            let page = parse_tag_list(&r, &repo)?;
            let end = (2 * k).min(sorted.len());
            ensure!(
                page == sorted[k..end],
                "Link page is {page:?}, expected {:?}",
                &sorted[k..end]
            );
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "tags/list?n=0 answers an empty list without a Link header",
        {
            let r = ctx
                .client
                .request(Method::GET, &tags_path(&repo))
                .query("n", "0")
                .send()
                .await?;
            status(&r, &[200])?;
            let page = parse_tag_list(&r, &repo)?;
            ensure!(page.is_empty(), "n=0 answered {} tags", page.len());
            ensure!(
                r.header("link").is_none(),
                "n=0 answered with a Link header"
            );
            Ok(String::new())
        }
    );
    check!(
        ctx,
        C,
        "tags/list of a repository that does not exist answers 404 NAME_UNKNOWN",
        {
            let other = format!("{repo}/missing-{}", data::random_id());
            let r = ctx
                .client
                .request(Method::GET, &tags_path(&other))
                .send()
                .await?;
            spec_error(&r, &[404], "NAME_UNKNOWN")?;
            Ok(String::new())
        }
    );

    // --- Referrers ---------------------------------------------------------------------------
    let empty = data::empty_json();
    let ref_a = data::opaque(33);
    let ref_b = data::opaque(38);
    let type_a = "application/vnd.berth.conformance.type-a";
    let type_b = "application/vnd.berth.conformance.type-b";
    let type_index = "application/vnd.berth.conformance.index";
    let subj_cfg = data::image_config();
    let subject = data::image_manifest(&subj_cfg, &[&layer], &Extras::default());
    let never_cfg = data::image_config();
    let never_pushed = data::image_manifest(&never_cfg, &[&layer], &Extras::default());

    let artifact =
        |config: Blob, layer: Blob, artifact_type: Option<&str>, subject: &Blob, note: &str| {
            data::image_manifest(
                &config,
                &[&layer],
                &Extras {
                    artifact_type: artifact_type.map(str::to_string),
                    subject: Some(subject.descriptor()),
                    annotations: vec![(ANNOTATION.to_string(), note.to_string())],
                    unknown_field: false,
                },
            )
        };
    let typed_config = |b: &Blob, t: &str| Blob {
        media_type: t.to_string(),
        ..b.clone()
    };
    let a_config = artifact(
        typed_config(&ref_a, type_a),
        empty.clone(),
        None,
        &subject,
        "config a",
    );
    let a_layer = artifact(
        empty.clone(),
        typed_config(&ref_a, type_a),
        Some(type_a),
        &subject,
        "layer a",
    );
    let b_config = artifact(
        typed_config(&ref_b, type_b),
        empty.clone(),
        None,
        &subject,
        "config b",
    );
    let b_layer = artifact(
        empty.clone(),
        typed_config(&ref_b, type_b),
        Some(type_b),
        &subject,
        "layer b",
    );
    let orphan = artifact(
        empty.clone(),
        typed_config(&ref_b, type_b),
        Some(type_b),
        &never_pushed,
        "orphan",
    );
    let index = data::image_index(
        &[&a_config, &a_layer],
        &Extras {
            artifact_type: Some(type_index.to_string()),
            subject: Some(subject.descriptor()),
            annotations: vec![(ANNOTATION.to_string(), "index".to_string())],
            unknown_field: false,
        },
    );
    // (manifest, artifactType the referrers list must report)
    let expected: Vec<(&Blob, &str)> = vec![
        (&a_config, type_a),
        (&a_layer, type_a),
        (&index, type_index),
        (&b_config, type_b),
        (&b_layer, type_b),
    ];

    check!(
        ctx,
        C,
        "setup: push the empty JSON blob and the artifact blobs",
        {
            ctx.push_blob(&repo, &empty).await?;
            ctx.push_blob(&repo, &ref_a).await?;
            Ok(String::new())
        }
    );
    // Referrers pushed before their subject exists.
    for (name, m) in [
        ("PUT of an artifact (typed by config.mediaType) whose subject is not pushed yet answers 201 with OCI-Subject", &a_config),
        ("PUT of an artifact (typed by artifactType) whose subject is not pushed yet answers 201 with OCI-Subject", &a_layer),
        ("PUT of an image index with a subject answers 201 with OCI-Subject", &index),
    ] {
        put_with_subject(ctx, name, &repo, m, &subject.digest).await;
    }
    check!(
        ctx,
        C,
        "setup: push the subject manifest (and a blob for later referrers)",
        {
            ctx.push_blob(&repo, &subj_cfg).await?;
            ctx.push_manifest(&repo, &ctx.tag("subject"), &subject)
                .await?;
            ctx.push_blob(&repo, &ref_b).await?;
            Ok(String::new())
        }
    );
    for (name, m, subj) in [
        ("PUT of an artifact (typed by config.mediaType) with an existing subject answers 201 with OCI-Subject", &b_config, &subject),
        ("PUT of an artifact (typed by artifactType) with an existing subject answers 201 with OCI-Subject", &b_layer, &subject),
        ("PUT of an artifact whose subject is never pushed answers 201 with OCI-Subject", &orphan, &never_pushed),
    ] {
        put_with_subject(ctx, name, &repo, m, &subj.digest).await;
    }

    check!(
        ctx,
        C,
        "GET referrers of an unknown digest answers 200 with an empty OCI image index",
        {
            let r = get_referrers(ctx, &repo, &data::unknown_digest(), None).await?;
            let list = referrers_index(&r)?;
            ensure!(list.is_empty(), "expected no referrers, got {}", list.len());
            Ok(String::new())
        }
    );
    check!(ctx, C, "GET referrers of a subject lists its 5 referrers with digest, mediaType, size, artifactType and annotations", {
        let r = get_referrers(ctx, &repo, &subject.digest, None).await?;
        let list = referrers_index(&r)?;
        ensure!(list.len() == expected.len(), "expected {} referrers, got {}", expected.len(), list.len());
        for (m, at) in &expected {
            find_referrer(&list, m, at)?;
        }
        Ok(String::new())
    });
    check!(ctx, C, "GET referrers with ?artifactType= answers only matching referrers with OCI-Filters-Applied: artifactType", {
        let r = get_referrers(ctx, &repo, &subject.digest, Some(type_a)).await?;
        let list = referrers_index(&r)?;
        let applied = r
            .header("oci-filters-applied")
            .map(|h| h.split(',').any(|f| f.trim() == "artifactType"))
            .unwrap_or(false);
        if applied {
            let want: Vec<_> = expected.iter().filter(|(_, at)| *at == type_a).collect();
            ensure!(list.len() == want.len(), "filtered list has {} entries, expected {}", list.len(), want.len());
            for (m, at) in want {
                find_referrer(&list, m, at)?;
            }
            for d in &list {
                let at = d.get("artifactType").and_then(Value::as_str).unwrap_or("");
                ensure!(at == type_a, "filter for {type_a} returned a referrer of type {at:?}");
            }
            return Ok(String::new());
        }
        // Filtering is a SHOULD: without the header the whole list must come back.
        ensure!(list.len() == expected.len(), "no OCI-Filters-Applied header, so all {} referrers are expected, got {}", expected.len(), list.len());
        Ok("filter not applied (no OCI-Filters-Applied header); the full list was returned".into())
    });
    check!(
        ctx,
        C,
        "GET referrers of a subject that was never pushed lists the manifest referring to it",
        {
            let r = get_referrers(ctx, &repo, &never_pushed.digest, None).await?;
            let list = referrers_index(&r)?;
            ensure!(list.len() == 1, "expected 1 referrer, got {}", list.len());
            find_referrer(&list, &orphan, type_b)?;
            Ok(String::new())
        }
    );

    ctx.teardown(
        C,
        &repo,
        &[
            &index, &a_config, &a_layer, &b_config, &b_layer, &orphan, &subject, &tagged,
        ],
        &[&cfg, &layer, &subj_cfg, &ref_a, &ref_b, &empty],
    )
    .await;
}

/// Sorted bytewise, or case-insensitively (the spec says "lexical order (i.e. case-insensitive
/// alphanumeric order)").
fn is_lexical(tags: &[String]) -> bool {
    let bytewise = tags.windows(2).all(|w| w[0] <= w[1]);
    let folded = tags
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    bytewise || folded
}

fn tags_path(repo: &str) -> String {
    format!("/v2/{repo}/tags/list")
}

/// Parses `{"name": .., "tags": [..]}` and checks the name.
fn parse_tag_list(r: &Response, repo: &str) -> anyhow::Result<Vec<String>> {
    let v: Value = serde_json::from_slice(&r.body)
        .with_context(|| format!("tag list is not JSON: {}", r.body_snippet(160)))?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    ensure!(name == repo, "tag list name is {name:?}, expected {repo:?}");
    let tags = match v.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("tag {t} is not a string"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => bail!("\"tags\" is not an array: {other}"),
    };
    Ok(tags)
}

/// The target of the `rel="next"` entry of a `Link` header.
fn next_link(header: &str) -> anyhow::Result<String> {
    for part in header.split(',') {
        let part = part.trim();
        let (Some(open), Some(close)) = (part.find('<'), part.find('>')) else {
            continue;
        };
        let params = &part[close + 1..];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next && open < close {
            return Ok(part[open + 1..close].to_string());
        }
    }
    bail!("Link header {header:?} has no <url>; rel=\"next\" entry")
}

async fn put_with_subject(ctx: &mut Ctx, name: &str, repo: &str, m: &Blob, subject: &str) {
    check!(ctx, C, name, {
        let r = ctx
            .client
            .request(Method::PUT, &ctx.manifest_path(repo, &m.digest))
            .header("Content-Type", m.media_type.clone())
            .body(m.bytes.clone())
            .send()
            .await?;
        status(&r, &[201])?;
        header_is(&r, "oci-subject", subject)?;
        Ok(String::new())
    });
}

async fn get_referrers(
    ctx: &Ctx,
    repo: &str,
    digest: &str,
    artifact_type: Option<&str>,
) -> anyhow::Result<Response> {
    let mut req = ctx
        .client
        .request(Method::GET, &format!("/v2/{repo}/referrers/{digest}"));
    if let Some(t) = artifact_type {
        req = req.query("artifactType", t);
    }
    let r = req.send().await?;
    status(&r, &[200])?;
    content_type_is(&r, MT_OCI_INDEX)?;
    Ok(r)
}

/// Validates the referrers response as an OCI image index and returns its descriptors.
fn referrers_index(r: &Response) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(&r.body)
        .with_context(|| format!("referrers response is not JSON: {}", r.body_snippet(160)))?;
    ensure!(
        v.get("schemaVersion") == Some(&Value::from(2)),
        "referrers index schemaVersion is not 2"
    );
    let mt = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
    ensure!(
        mt == MT_OCI_INDEX,
        "referrers index mediaType is {mt:?}, expected {MT_OCI_INDEX}"
    );
    match v.get("manifests") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => bail!("referrers index has no \"manifests\" array"),
    }
}

/// The list holds a descriptor for `m` with the right mediaType, size, artifactType and the
/// manifest's annotations.
fn find_referrer(list: &[Value], m: &Blob, artifact_type: &str) -> anyhow::Result<()> {
    let d = list
        .iter()
        .find(|d| d.get("digest").and_then(Value::as_str) == Some(m.digest.as_str()))
        .ok_or_else(|| anyhow!("referrer {} missing from the list", short(&m.digest)))?;
    let mt = d.get("mediaType").and_then(Value::as_str).unwrap_or("");
    ensure!(
        mt == m.media_type,
        "referrer {}: mediaType {mt:?}, expected {:?}",
        short(&m.digest),
        m.media_type
    );
    let size = d.get("size").and_then(Value::as_u64).unwrap_or(0);
    ensure!(
        size == m.len() as u64,
        "referrer {}: size {size}, expected {}",
        short(&m.digest),
        m.len()
    );
    let at = d.get("artifactType").and_then(Value::as_str).unwrap_or("");
    ensure!(
        at == artifact_type,
        "referrer {}: artifactType {at:?}, expected {artifact_type:?}",
        short(&m.digest)
    );
    let manifest: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
    if let Some(Value::Object(want)) = manifest.get("annotations") {
        for (k, v) in want {
            let got = d.get("annotations").and_then(|a| a.get(k));
            ensure!(
                got == Some(v),
                "referrer {}: annotation {k} is {got:?}, expected {v}",
                short(&m.digest)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_parsing() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#)
                .ok()
                .as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<http://h/x>; rel="prev", <http://h/y>; rel=next"#)
                .ok()
                .as_deref(),
            Some("http://h/y")
        );
        assert!(next_link(r#"</x>; rel="prev""#).is_err());
    }

    #[test]
    fn lexical_orders() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_lexical(&v(&["a", "b", "c"])));
        assert!(is_lexical(&v(&["B", "a"])));
        assert!(is_lexical(&v(&["a", "B"])));
        assert!(!is_lexical(&v(&["b", "a"])));
    }
}
