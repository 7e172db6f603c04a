//! Media types Berth knows by name.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest media types a registry accepts on PUT.
pub const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// Prefix of the OCI non-distributable layer types (`...nondistributable.v1.tar`, `+gzip`,
/// `+zstd`; deprecated by image-spec 1.1 but still in Windows base images).
pub const OCI_LAYER_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";
/// Docker's foreign layer type (`...foreign.diff.tar.gzip` and its variants).
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// Whether a layer of this media type is non-distributable: clients fetch it from its `urls`
/// (or already have it), so a registry does not hold it and must not require it.
pub fn is_non_distributable(media_type: &str) -> bool {
    let docker = media_type
        .strip_prefix(DOCKER_FOREIGN_LAYER)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    docker || media_type.starts_with(OCI_LAYER_NONDISTRIBUTABLE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_distributable_table() {
        let cases = [
            ("application/vnd.oci.image.layer.nondistributable.v1.tar", true),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", true),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", true),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", true),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar", true),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.zstd", true),
            ("application/vnd.docker.image.rootfs.foreign.diff.targz", false),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", false),
            ("application/vnd.oci.image.layer.v1.tar+gzip", false),
            ("application/vnd.oci.image.layer.nondistributable", false),
            (OCI_CONFIG, false),
            ("", false),
        ];
        for (mt, want) in cases {
            assert_eq!(is_non_distributable(mt), want, "{mt}");
        }
    }
}
