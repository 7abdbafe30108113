//! The last applied desired state on disk, so the agent re-applies it at start without the
//! controller (SPEC §2.3). Written atomically (write, fsync, rename) after every apply.

use std::path::Path;

use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::model::DesiredState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is unreadable ({source}); it will be replaced by the controller's state")]
    Decode {
        path: String,
        source: postcard::Error,
    },
}

/// Loads the saved state; `Ok(None)` if there is none yet.
pub fn load(path: &Path) -> Result<Option<DesiredState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|source| StateError::Decode {
            path: path.display().to_string(),
            source,
        })
}

/// Saves the state atomically (it holds credentials: mode 0600).
pub fn save(path: &Path, state: &DesiredState) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        vpn_shared::fsutil::create_private_dir(dir).map_err(write_err)?;
    }
    let bytes = postcard::to_stdvec(state).map_err(|e| StateError::Write {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes, SECRET_MODE).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back_and_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/desired.bin");
        assert!(load(&p).unwrap().is_none());
        let s = DesiredState {
            generation: 7,
            ..Default::default()
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s));
        std::fs::write(&p, [0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(load(&p), Err(StateError::Decode { .. })));
    }
}
