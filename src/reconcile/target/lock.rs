//! One agent per directory: an exclusive lock on `.DIR.tresor/lock`, held for as long as
//! the [`Target`](super::Target) lives.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use super::{io_err, TargetError, LOCK};

/// Opens and locks `state/lock` for the target `dir`. Fails with [`TargetError::Locked`]
/// while another process holds it; the lock ends when the returned file is closed.
pub(super) fn acquire(state: &Path, dir: &Path) -> Result<File, TargetError> {
    let lock_path = state.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(TargetError::Locked {
                path: dir.to_path_buf(),
            })
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }
    Ok(lock)
}
