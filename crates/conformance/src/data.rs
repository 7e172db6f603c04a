//! Test content: random blobs, image configs, image manifests, indexes and artifacts with a
//! `subject`, each with its digest. Every run makes fresh content so runs never collide.

use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MT_OCTET_STREAM: &str = "application/octet-stream";

/// Digest of the two bytes `{}`, the OCI empty descriptor.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// A digest algorithm the checks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// `algorithm:hex` digest of `bytes`.
pub fn digest_of(algo: Algorithm, bytes: &[u8]) -> String {
    match algo {
        Algorithm::Sha256 => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        Algorithm::Sha512 => format!("sha512:{}", hex::encode(Sha512::digest(bytes))),
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    digest_of(Algorithm::Sha256, bytes)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// A short random lowercase hex string, for unique tags.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// A digest of random content that no registry holds.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(64))
}

/// Content addressed by its digest, with the media type it is referenced with.
#[derive(Debug, Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    pub fn new(bytes: Vec<u8>, media_type: &str) -> Blob {
        Blob::with_algorithm(bytes, media_type, Algorithm::Sha256)
    }

    pub fn with_algorithm(bytes: Vec<u8>, media_type: &str, algo: Algorithm) -> Blob {
        let digest = digest_of(algo, &bytes);
        Blob {
            bytes,
            digest,
            media_type: media_type.to_string(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The OCI descriptor pointing at this content.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// A random layer of `n` bytes.
pub fn layer(n: usize) -> Blob {
    Blob::new(random_bytes(n), MT_OCI_LAYER)
}

/// An opaque blob of `n` random bytes.
pub fn opaque(n: usize) -> Blob {
    Blob::new(random_bytes(n), MT_OCTET_STREAM)
}

/// A minimal image config, unique through a random author.
pub fn image_config() -> Blob {
    let cfg = json!({
        "architecture": "amd64",
        "os": "linux",
        "author": format!("berth-conformance-{}", random_id()),
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    Blob::new(to_pretty(&cfg), MT_OCI_CONFIG)
}

/// The two bytes `{}`.
pub fn empty_json() -> Blob {
    Blob::new(b"{}".to_vec(), MT_OCI_EMPTY)
}

/// Optional parts of a manifest.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub artifact_type: Option<String>,
    pub subject: Option<Value>,
    pub annotations: Vec<(String, String)>,
    /// Add a field the image-spec does not define to the config descriptor; registries must
    /// store and serve the manifest bytes unchanged anyway.
    pub unknown_field: bool,
}

fn to_pretty(v: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

fn apply_extras(m: &mut serde_json::Map<String, Value>, extras: &Extras) {
    if let Some(at) = &extras.artifact_type {
        m.insert("artifactType".into(), json!(at));
    }
    if let Some(s) = &extras.subject {
        m.insert("subject".into(), s.clone());
    }
    if !extras.annotations.is_empty() {
        let ann: serde_json::Map<String, Value> = extras
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        m.insert("annotations".into(), Value::Object(ann));
    }
}

/// An OCI image manifest over `config` and `layers`.
pub fn image_manifest(config: &Blob, layers: &[&Blob], extras: &Extras) -> Blob {
    image_manifest_with(config, layers, extras, Algorithm::Sha256)
}

/// As [`image_manifest`], addressed with the given digest algorithm.
pub fn image_manifest_with(
    config: &Blob,
    layers: &[&Blob],
    extras: &Extras,
    algo: Algorithm,
) -> Blob {
    let mut cfg_desc = config.descriptor();
    if extras.unknown_field {
        if let Some(o) = cfg_desc.as_object_mut() {
            o.insert("newUnspecifiedField".into(), json!("aGVsbG8gd29ybGQ="));
        }
    }
    let mut m = serde_json::Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(MT_OCI_MANIFEST));
    m.insert("config".into(), cfg_desc);
    m.insert(
        "layers".into(),
        Value::Array(layers.iter().map(|l| l.descriptor()).collect()),
    );
    apply_extras(&mut m, extras);
    Blob::with_algorithm(to_pretty(&Value::Object(m)), MT_OCI_MANIFEST, algo)
}

/// An OCI image index over `manifests`.
pub fn image_index(manifests: &[&Blob], extras: &Extras) -> Blob {
    let mut m = serde_json::Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(MT_OCI_INDEX));
    m.insert(
        "manifests".into(),
        Value::Array(
            manifests
                .iter()
                .map(|d| {
                    let mut desc = d.descriptor();
                    if let Some(o) = desc.as_object_mut() {
                        o.insert(
                            "platform".into(),
                            json!({"architecture": "amd64", "os": "linux"}),
                        );
                    }
                    desc
                })
                .collect(),
        ),
    );
    apply_extras(&mut m, extras);
    Blob::new(to_pretty(&Value::Object(m)), MT_OCI_INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_digest_is_the_well_known_one() {
        assert_eq!(empty_json().digest, EMPTY_JSON_DIGEST);
    }

    #[test]
    fn sha512_digest_shape() {
        let d = digest_of(Algorithm::Sha512, b"abc");
        assert!(d.starts_with("sha512:"));
        assert_eq!(d.len(), 7 + 128);
    }

    #[test]
    fn manifest_fields() {
        let cfg = image_config();
        let l = layer(10);
        let subj = image_manifest(&cfg, &[&l], &Extras::default());
        let art = image_manifest(
            &empty_json(),
            &[&l],
            &Extras {
                artifact_type: Some("application/x.test".into()),
                subject: Some(subj.descriptor()),
                annotations: vec![("k".into(), "v".into())],
                unknown_field: true,
            },
        );
        let v: Value = serde_json::from_slice(&art.bytes).expect("json");
        assert_eq!(v["subject"]["digest"], json!(subj.digest));
        assert_eq!(v["artifactType"], "application/x.test");
        assert_eq!(v["annotations"]["k"], "v");
        assert_eq!(v["config"]["mediaType"], MT_OCI_EMPTY);
        assert!(v["config"]["newUnspecifiedField"].is_string());
        assert_eq!(art.digest, sha256(&art.bytes));
    }
}
