//! The last applied desired state on disk, so the agent re-applies it at start without the
//! controller (SPEC §2.3). Written atomically (write, fsync, rename) after every apply.
//! The allowances the agent enforces by itself ([`crate::allowance::AllowanceBook`]) are kept
//! the same way ([`load_as`], [`save_as`]).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::model::DesiredState;
use vpn_shared::proto::ResourceResult;

/// The ack resource that says whether the applied state was saved.
pub const STATE_RESOURCE: &str = "host/state";

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
    load_as(path)
}

/// Saves the state atomically (it holds credentials: mode 0600).
pub fn save(path: &Path, state: &DesiredState) -> Result<(), StateError> {
    save_as(path, state)
}

/// Loads a postcard file the agent saved with [`save_as`]; `Ok(None)` if there is none yet.
pub fn load_as<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
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

/// Saves `value` atomically with mode 0600, creating its directory (0700) if missing; an
/// existing one keeps its mode (the data directory itself is the operator's).
pub fn save_as<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        vpn_shared::fsutil::create_private_dir(dir).map_err(write_err)?;
    }
    let bytes = postcard::to_stdvec(value).map_err(|e| StateError::Write {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes, SECRET_MODE).map_err(write_err)
}

/// Saves the state and says how that went, as the `host/state` result of the ack. A state
/// applied but not saved is not fail-static: a restart while the controller is away would
/// re-apply the older one on disk (a suspended user's port back, a block lifted), so the
/// controller must hear of it rather than believe the new state is safe on the host.
pub fn saved_result(path: &Path, state: &DesiredState) -> ResourceResult {
    match save(path, state) {
        Ok(()) => ResourceResult::ok(STATE_RESOURCE),
        Err(e) => ResourceResult::error(
            STATE_RESOURCE,
            format!("applied but not saved, a restart would re-apply an older state: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::proto::Outcome;

    #[test]
    fn a_state_that_cannot_be_saved_is_an_error_for_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the state directory should be: fails even for root, unlike a mode.
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let s = DesiredState {
            generation: 9,
            ..Default::default()
        };
        let r = saved_result(&blocker.join("desired.bin"), &s);
        assert_eq!(r.resource, STATE_RESOURCE);
        let Outcome::Error(message) = &r.outcome else {
            panic!("an unsaved state reported as {r:?}");
        };
        assert!(message.contains("not saved"), "{message}");
        assert!(
            message.contains(&blocker.display().to_string()),
            "{message}"
        );

        let ok = saved_result(&dir.path().join("ok/desired.bin"), &s);
        assert_eq!(ok, ResourceResult::ok(STATE_RESOURCE));
    }

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

    #[test]
    fn allowances_save_private_beside_the_state_and_leave_the_data_dir_alone() {
        use std::os::unix::fs::PermissionsExt;

        use crate::allowance::{AllowanceBook, Figures};

        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let p = crate::config::Paths::new(dir.path()).allowances;
        assert!(load_as::<AllowanceBook>(&p).unwrap().is_none());
        let book = AllowanceBook {
            epoch: 3,
            base: 9,
            users: [(
                "u1".to_owned(),
                Figures {
                    remaining: Some(5),
                    expires_at: None,
                },
            )]
            .into(),
        };
        save_as(&p, &book).unwrap();
        assert_eq!(load_as::<AllowanceBook>(&p).unwrap(), Some(book));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(dir.path()), 0o750);
        std::fs::write(&p, [0xff]).unwrap();
        assert!(matches!(
            load_as::<AllowanceBook>(&p),
            Err(StateError::Decode { .. })
        ));
    }
}
