//! One writer per folder: a dataset being ingested into, or a run folder being trained in, holds
//! an OS advisory lock (`flock`, through std's `File::try_lock`) on its `.lock` file, which holds
//! the writer's pid as text. A second writer is refused with that pid. The OS drops the lock when
//! the process ends, however it ends, so a `kill -9` leaves no stale lock: the file stays, but
//! the next writer takes it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::RunError;

/// The lock file's name inside the folder it guards.
pub const LOCK_FILE: &str = ".lock";

/// The held lock of a folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    folder: PathBuf,
}

impl DirLock {
    /// Takes the lock of the existing folder `folder`, or fails with
    /// [`RunError::Locked`] naming the process that holds it.
    pub fn acquire(folder: &Path) -> Result<DirLock, RunError> {
        let path = folder.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(RunError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(RunError::Locked { path: folder.into(), pid: holder(&path) }),
            Err(TryLockError::Error(e)) => return Err(RunError::io(&path)(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(RunError::io(&path))?;
        Ok(DirLock { file, folder: folder.into() })
    }

    /// The folder this lock guards.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // cleared while still held, so no reader sees a pid that is no longer writing
        let _ = self.file.set_len(0);
    }
}

/// Whether `folder` holds anything but its lock file (a missing folder holds nothing).
pub fn holds_files(folder: &Path) -> Result<bool, RunError> {
    if !folder.exists() {
        return Ok(false);
    }
    let entries = std::fs::read_dir(folder).map_err(RunError::io(folder))?;
    Ok(entries.flatten().any(|e| e.file_name() != LOCK_FILE))
}

/// The pid written in a held lock file; the holder writes it just after taking the lock, so an
/// empty file is read again for a moment.
fn holder(path: &Path) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if File::open(path).and_then(|mut f| f.read_to_string(&mut text)).is_ok()
            && let Ok(pid) = text.trim().parse()
        {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_pid_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("vismae-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let first = DirLock::acquire(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(dir.join(LOCK_FILE)).ok(), Some(std::process::id().to_string()));
        let second = DirLock::acquire(&dir).unwrap_err();
        assert!(matches!(second, RunError::Locked { pid: Some(p), .. } if p == std::process::id()), "{second}");
        assert!(second.to_string().contains(&format!("pid {}", std::process::id())), "{second}");
        drop(first);
        assert_eq!(std::fs::read_to_string(dir.join(LOCK_FILE)).ok(), Some(String::new()));
        let again = DirLock::acquire(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.folder(), dir.as_path());
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
