//! Blob uploads (the workflow over the metadata and blob stores).
