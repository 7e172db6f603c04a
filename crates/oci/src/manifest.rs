//! Manifest validation: parse the raw bytes a client PUTs, check them against the OCI image and
//! Docker schema 2 shapes, and extract what the registry must know (referenced blobs, child
//! manifests, `subject`, `artifactType`, annotations).
//!
//! Non-distributable layers (OCI `...layer.nondistributable.*`, Docker `...foreign.diff.tar*`,
//! the base layers of Windows images) are kept apart from the required blobs: clients fetch them
//! from their `urls`, so a registry accepts the manifest without them, as distribution does.
//!
//! The raw bytes are what is stored and served; the digest is over the raw bytes. Nothing here
//! re-serialises a manifest. Unknown fields are tolerated, as the specs require.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::media;

/// The largest manifest Berth accepts (4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why a manifest was refused. Every variant maps to MANIFEST_INVALID except `TooLarge`
/// (SIZE_INVALID) in the server crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2 (Docker schema 1 is not supported)")]
    SchemaVersion,
    #[error("manifest media type {0:?} is not supported; use an OCI image manifest or index, or a Docker schema 2 manifest or manifest list")]
    UnsupportedMediaType(String),
    #[error("the manifest's mediaType {field:?} differs from the Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    #[error("manifest has no mediaType and its Content-Type does not name one")]
    NoMediaType,
    #[error("{0}")]
    Shape(String),
    #[error("{what} has URL {url:?}; a non-distributable layer's urls must be absolute http or https URLs without a fragment")]
    LayerUrl { what: String, url: String },
}

/// A content descriptor as found in manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// The annotations as raw JSON (an object), if any.
    pub annotations: Option<serde_json::Value>,
    /// Where else the content can be fetched (non-distributable layers); empty if none.
    pub urls: Vec<String>,
}

/// Whether a manifest is an image manifest (config + layers) or an index (child manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What the registry needs to know about a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    pub media_type: String,
    /// Config and layers (image manifests). Must exist in the repository.
    pub blobs: Vec<Descriptor>,
    /// Non-distributable layers ([`media::is_non_distributable`]): not required in the
    /// repository (clients fetch them from their `urls`), so not in `blobs`.
    pub non_distributable: Vec<Descriptor>,
    /// Child manifests (indexes). Must exist in the repository.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for image manifests without one, the config's media type
    /// (as the referrers API requires).
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

fn descriptor(d: RawDescriptor, what: &str) -> Result<Descriptor, ManifestError> {
    let digest = d.digest.ok_or_else(|| ManifestError::Shape(format!("{what} has no digest")))?;
    let digest: Digest = digest.parse().map_err(|e| ManifestError::Shape(format!("{what}: {e}")))?;
    let size = d.size.ok_or_else(|| ManifestError::Shape(format!("{what} has no size")))?;
    if size < 0 {
        return Err(ManifestError::Shape(format!("{what} has a negative size")));
    }
    let media_type = d.media_type.ok_or_else(|| ManifestError::Shape(format!("{what} has no mediaType")))?;
    Ok(Descriptor {
        media_type,
        digest,
        size: size as u64,
        artifact_type: d.artifact_type,
        annotations: d.annotations.map(|a| serde_json::to_value(a).unwrap_or_default()),
        urls: d.urls.unwrap_or_default(),
    })
}

/// Whether `url` is an absolute `http`/`https` URL with a host and no fragment (what
/// distribution accepts in a foreign layer's `urls`).
fn valid_layer_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    !host.is_empty() && !url.contains('#') && url.bytes().all(|b| b.is_ascii_graphic())
}

/// Strips parameters (`; charset=...`) from a Content-Type.
fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Validates a manifest's raw bytes. `content_type` is the request's Content-Type, if any.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    // JSON is UTF-8 (RFC 8259 §8.1). serde_json skips the bytes of fields it ignores without
    // validating them, so check the whole body first (found by the `manifest` fuzz target).
    let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::Json(format!("manifest is not UTF-8: {e}")))?;
    let raw: RawManifest = serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let header = content_type.map(bare_media_type).filter(|c| !c.is_empty());
    let media_type = match (&raw.media_type, header) {
        (Some(field), Some(h)) if field != h && media::MANIFEST_TYPES.contains(&h) => {
            return Err(ManifestError::MediaTypeMismatch { field: field.clone(), header: h.into() });
        }
        (Some(field), _) => field.clone(),
        (None, Some(h)) if media::MANIFEST_TYPES.contains(&h) => h.to_owned(),
        // No usable media type anywhere: infer from the shape, as OCI manifests may omit it.
        (None, _) if raw.manifests.is_some() && raw.config.is_none() => media::OCI_INDEX.to_owned(),
        (None, _) if raw.config.is_some() => media::OCI_MANIFEST.to_owned(),
        (None, _) => return Err(ManifestError::NoMediaType),
    };
    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_owned())),
    };
    let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
    let annotations = raw.annotations.map(|a| serde_json::to_value(a).unwrap_or_default());
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Shape("an image manifest must not have manifests".into()));
            }
            let config = descriptor(
                raw.config.ok_or_else(|| ManifestError::Shape("image manifest has no config".into()))?,
                "config",
            )?;
            let layers = raw.layers.ok_or_else(|| ManifestError::Shape("image manifest has no layers".into()))?;
            let artifact_type = raw.artifact_type.clone().or_else(|| Some(config.media_type.clone()));
            let mut blobs = vec![config];
            let mut non_distributable = Vec::new();
            for (i, l) in layers.into_iter().enumerate() {
                let what = format!("layers[{i}]");
                let layer = descriptor(l, &what)?;
                if !media::is_non_distributable(&layer.media_type) {
                    blobs.push(layer);
                    continue;
                }
                if let Some(url) = layer.urls.iter().find(|u| !valid_layer_url(u)) {
                    return Err(ManifestError::LayerUrl { what, url: url.clone() });
                }
                non_distributable.push(layer);
            }
            Ok(ParsedManifest {
                kind,
                media_type,
                blobs,
                non_distributable,
                manifests: vec![],
                subject,
                artifact_type,
                annotations,
            })
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Shape("an index must not have config or layers".into()));
            }
            let children = raw.manifests.ok_or_else(|| ManifestError::Shape("index has no manifests".into()))?;
            let manifests = children
                .into_iter()
                .enumerate()
                .map(|(i, m)| descriptor(m, &format!("manifests[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ParsedManifest {
                kind,
                media_type,
                blobs: vec![],
                non_distributable: vec![],
                manifests,
                subject,
                artifact_type: raw.artifact_type,
                annotations,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":10}}]{extra}}}"#
        )
    }

    #[test]
    fn table() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"x/y",
            "manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":7}}]}}"#
        );
        let no_media = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        struct Case<'a> {
            name: &'a str,
            body: String,
            ct: Option<&'a str>,
            want: Result<(ManifestKind, usize, usize), &'a str>,
        }
        let cases = vec![
            Case { name: "oci image", body: image(""), ct: Some(media::OCI_MANIFEST), want: Ok((ManifestKind::Image, 2, 0)) },
            Case { name: "oci image, ct with params", body: image(""), ct: Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"), want: Ok((ManifestKind::Image, 2, 0)) },
            Case { name: "docker v2", body: docker.clone(), ct: Some(media::DOCKER_MANIFEST), want: Ok((ManifestKind::Image, 1, 0)) },
            Case { name: "index", body: index.clone(), ct: Some(media::OCI_INDEX), want: Ok((ManifestKind::Index, 0, 1)) },
            Case { name: "no mediaType field, shape infers", body: no_media, ct: None, want: Ok((ManifestKind::Image, 1, 0)) },
            Case { name: "mismatch", body: image(""), ct: Some(media::DOCKER_MANIFEST), want: Err("differs") },
            Case { name: "schema1", body: r#"{"schemaVersion":1,"name":"x"}"#.into(), ct: None, want: Err("schemaVersion") },
            Case { name: "not json", body: "{".into(), ct: None, want: Err("JSON") },
            Case { name: "array", body: "[]".into(), ct: None, want: Err("JSON") },
            Case { name: "bad digest", body: image("").replace(D2, "sha256:zz"), ct: None, want: Err("layers[0]") },
            Case { name: "negative size", body: image("").replace("\"size\":10", "\"size\":-1"), ct: None, want: Err("negative") },
            Case { name: "no layers", body: format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{D1}","size":2}}}}"#, media::OCI_MANIFEST), ct: None, want: Err("no layers") },
            Case { name: "index with config", body: index.replace("\"manifests\"", &format!(r#""config":{{"mediaType":"a/b","digest":"{D1}","size":1}},"manifests""#)), ct: None, want: Err("must not") },
            Case { name: "unknown type", body: image("").replace(media::OCI_MANIFEST, "application/x-foo"), ct: None, want: Err("not supported") },
        ];
        for c in cases {
            let got = parse(c.body.as_bytes(), c.ct);
            match (&c.want, &got) {
                (Ok((k, b, m)), Ok(p)) => {
                    assert_eq!((p.kind, p.blobs.len(), p.manifests.len()), (*k, *b, *m), "{}", c.name)
                }
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{}: {e} lacks {w:?}", c.name),
                _ => panic!("{}: want {:?}, got {:?}", c.name, c.want, got),
            }
        }
    }

    /// Non-distributable layers are set apart from the blobs the repository must hold; every
    /// other layer stays required, even with `urls`.
    #[test]
    fn non_distributable_layers() {
        let layer = |mt: &str, urls: &str| format!(r#"{{"mediaType":"{mt}","digest":"{D2}","size":10{urls}}}"#);
        let manifest = |mt: &str, layers: &[String]| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"a/b","digest":"{D1}","size":2}},"layers":[{}]}}"#,
                layers.join(",")
            )
        };
        let url = r#","urls":["https://mcr.microsoft.com/v2/windows/blobs/sha256:00"]"#;
        const OCI_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
        const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
        const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
        struct Case<'a> {
            name: &'a str,
            body: String,
            // (required blobs incl. config, non-distributable layers) or an error's text
            want: Result<(usize, usize), &'a str>,
        }
        let cases = vec![
            Case { name: "oci non-distributable with urls", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, url)]), want: Ok((1, 1)) },
            Case { name: "oci non-distributable without urls", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, "")]), want: Ok((1, 1)) },
            Case { name: "docker foreign with urls", body: manifest(media::DOCKER_MANIFEST, &[layer(DOCKER_FOREIGN, url)]), want: Ok((1, 1)) },
            Case {
                name: "windows shape: foreign base, then regular layers",
                body: manifest(media::DOCKER_MANIFEST, &[layer(DOCKER_FOREIGN, url), layer(DOCKER_FOREIGN, url), layer(media::DOCKER_LAYER, "")]),
                want: Ok((2, 2)),
            },
            Case { name: "regular layer with urls stays required", body: manifest(media::OCI_MANIFEST, &[layer(OCI_LAYER, url)]), want: Ok((2, 0)) },
            Case { name: "ftp url", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, r#","urls":["ftp://h/x"]"#)]), want: Err("ftp://h/x") },
            Case { name: "url with fragment", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, r#","urls":["https://h/x#f"]"#)]), want: Err("fragment") },
            Case { name: "url without host", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, r#","urls":["https:///x"]"#)]), want: Err("https:///x") },
            Case { name: "url with a space", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, r#","urls":["https://h/a b"]"#)]), want: Err("http or https") },
            Case { name: "urls not strings", body: manifest(media::OCI_MANIFEST, &[layer(OCI_ND, r#","urls":[1]"#)]), want: Err("JSON") },
        ];
        for c in cases {
            let got = parse(c.body.as_bytes(), None);
            match (&c.want, &got) {
                (Ok((b, n)), Ok(p)) => {
                    assert_eq!((p.blobs.len(), p.non_distributable.len()), (*b, *n), "{}", c.name);
                    assert!(p.blobs.iter().all(|d| !media::is_non_distributable(&d.media_type)), "{}", c.name);
                }
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{}: {e} lacks {w:?}", c.name),
                _ => panic!("{}: want {:?}, got {:?}", c.name, c.want, got),
            }
        }
        let p = parse(manifest(media::OCI_MANIFEST, &[layer(OCI_ND, url)]).as_bytes(), None).unwrap();
        assert_eq!(p.non_distributable[0].urls, vec!["https://mcr.microsoft.com/v2/windows/blobs/sha256:00".to_owned()]);
    }

    #[test]
    fn subject_and_artifact_type() {
        let body = image(&format!(
            r#","subject":{{"mediaType":"{}","digest":"{D1}","size":5}},"annotations":{{"a":"b"}}"#,
            media::OCI_MANIFEST
        ));
        let p = parse(body.as_bytes(), None).unwrap();
        assert_eq!(p.subject.unwrap().digest.as_str(), D1);
        assert_eq!(p.artifact_type.as_deref(), Some(media::OCI_CONFIG));
        assert_eq!(p.annotations.unwrap()["a"], "b");
        let p = parse(image(r#","artifactType":"application/x-sbom""#).as_bytes(), None).unwrap();
        assert_eq!(p.artifact_type.as_deref(), Some("application/x-sbom"));
    }

    #[test]
    fn invalid_utf8_in_an_ignored_field_is_refused() {
        let mut body = image(r#","x-unknown":"AB""#).into_bytes();
        let at = body.windows(2).position(|w| w == b"AB").unwrap();
        body[at] = 0xff;
        let err = parse(&body, None).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(parse(&big, None), Err(ManifestError::TooLarge));
    }
}
