//! OCI distribution protocol types: validated newtypes for repository names, tags, references and
//! digests, the media types Berth understands, manifest validation, and the spec's error codes.
//!
//! Architecture invariant: this crate does no IO and knows nothing of HTTP. Everything here is a
//! pure function of its input, so it is tested by tables of cases and fuzzed.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, CheckpointError, Digest, DigestError, ResumableHasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest, MAX_MANIFEST_BYTES};
pub use name::{NameError, Reference, RepoName, Tag};
