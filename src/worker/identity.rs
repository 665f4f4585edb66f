//! The worker's persistent instance id, kept in its state dir, so that a
//! coordinator can tell a returning worker from a new one even without a
//! resume token. The file is private to the worker's user.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("state dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} holds no valid instance id; delete it to get a new one")]
    Corrupt(PathBuf),
}

/// Default state dir for a worker name.
pub fn default_state_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".edgeplane"));
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join("edgeplane").join(safe)
}

/// Reads the instance id, creating it on first start.
pub fn load_or_create_instance_id(dir: &Path) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let path = dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(IdentityError::Corrupt(path));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = dir.join("instance-id.tmp");
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(id.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_instance_id(&dir.path().join("w")).unwrap();
        let b = load_or_create_instance_id(&dir.path().join("w")).unwrap();
        assert_eq!(a, b);
        let c = load_or_create_instance_id(&dir.path().join("other")).unwrap();
        assert_ne!(a, c);
        std::fs::write(dir.path().join("w/instance-id"), "garbage").unwrap();
        assert!(matches!(
            load_or_create_instance_id(&dir.path().join("w")),
            Err(IdentityError::Corrupt(_))
        ));
    }
}
