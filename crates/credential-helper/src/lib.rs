//! `docker-credential-berth`, the Docker credential helper of Berth, and the saved logins of
//! `berth login` that it reads.
//!
//! - [`logins`]: the file of `berth login` (`$XDG_CONFIG_HOME/berth/credentials.json`): one
//!   login per server, the current one, read and written by the `berth` CLI and by this helper.
//! - [`cache`]: the helper's cache of short-lived registry passwords
//!   (`$XDG_CACHE_HOME/berth/helper/`), so `docker pull` does not ask Berth every time.
//!
//! The binary (`src/main.rs`) speaks the protocol of docker-credential-helpers (`get`, `store`,
//! `erase`, `list`, `version`): docker, podman, buildah and skopeo run it through `credHelpers`
//! in `~/.docker/config.json`. For a `berth login` it trades the login's token at
//! `POST <server>/auth/credential` for a short-lived registry password and caches it, so the
//! long-lived login never reaches the container runtime.
//!
//! Both files hold secrets: they are written atomically (a temporary file in the same folder,
//! then a rename) with mode 0600 in folders created 0700, and no `Debug` output of this crate
//! shows a secret.

pub mod cache;
pub mod logins;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

/// `$<xdg_var>/berth`, else `$HOME/<home_sub>/berth`. An empty or relative `$<xdg_var>` is
/// ignored, as the XDG base directory specification says.
pub(crate) fn berth_dir(xdg_var: &str, home_sub: &str) -> anyhow::Result<PathBuf> {
    let xdg = std::env::var_os(xdg_var).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = match xdg {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).with_context(|| format!("neither {xdg_var} nor HOME is set"))?;
            PathBuf::from(home).join(home_sub)
        }
    };
    Ok(base.join("berth"))
}

/// Creates `dir` and its missing parents with mode 0700 (an existing folder keeps its mode).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes `bytes` to `path` atomically with mode 0600: a new temporary file in the same folder,
/// synced, then renamed over `path`. Readers see the old file or the new one, never a part.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?.to_string_lossy();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let written = (|| -> std::io::Result<()> {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("writing {}", path.display())));
    }
    // The rename itself is durable once the folder is synced (best effort: not every platform can).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a file; a file that is not there is no error.
pub(crate) fn remove_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn write_private_is_0600_in_a_0700_folder_and_replaces_atomically() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/secret.json");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(tmp.path().join("a/b")).unwrap().permissions().mode() & 0o777, 0o700);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(tmp.path().join("a/b")).unwrap().count(), 1);
        remove_file(&path).unwrap();
        remove_file(&path).unwrap();
        assert!(!path.exists());
    }
}
