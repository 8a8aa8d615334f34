//! `DIR/LOCK`: one process per data dir. Held with an OS file lock (released by the kernel
//! when the process dies, so a crash never leaves a stale lock), holding the owner's pid
//! for the error message others see.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct DirLock {
    _file: Option<File>,
    path: PathBuf,
    read_only: Option<&'static str>,
}

impl DirLock {
    /// For the offline read-only tools: [`DirLock::acquire`], or, when the dir is not
    /// writable (a copy restored from a backup with `chmod -R a-w`, a read-only mount), the
    /// same exclusive lock taken on `LOCK` opened read-only (flock needs no write access, so
    /// a running node still excludes us), or no lock at all when there is no `LOCK` (no node
    /// ever ran there since the dir became read-only: a node creates it first). Never
    /// writes; [`DirLock::read_only_note`] says which.
    pub fn acquire_for_reading(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let denied = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            )
        };
        match Self::acquire(dir) {
            Err(Error::Io { cause, .. }) if denied(&cause) => {}
            other => return other,
        }
        match File::open(&path) {
            Ok(file) => {
                lock_or_refuse(dir, &file)?;
                Ok(DirLock {
                    _file: Some(file),
                    path,
                    read_only: Some("the data dir is not writable: LOCK was locked read-only"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DirLock {
                _file: None,
                path,
                read_only: Some("the data dir is not writable and has no LOCK: read unlocked"),
            }),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// Set when the lock was taken read-only or not at all (see [`Self::acquire_for_reading`]).
    pub fn read_only_note(&self) -> Option<&'static str> {
        self.read_only
    }

    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(&path))?;
        // Held by this very process: a store just closed in it whose lock a child being
        // spawned meanwhile (health checks, `cp`) still shares between its fork and its exec.
        // That lasts a moment; a store really open here stays refused, a little later.
        let mut tries = 0;
        loop {
            match lock_or_refuse(dir, &file) {
                Err(Error::Locked { pid: Some(pid), .. })
                    if pid == std::process::id() && tries < OWN_PROCESS_TRIES =>
                {
                    tries += 1;
                    std::thread::sleep(OWN_PROCESS_WAIT);
                }
                other => break other?,
            }
        }
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(Error::io(&path))?;
        Ok(DirLock {
            _file: Some(file),
            path,
            read_only: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How often, and how far apart, [`DirLock::acquire`] tries again a lock our own process holds.
const OWN_PROCESS_TRIES: u32 = 50;
const OWN_PROCESS_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// An exclusive OS lock on `file` (`DIR/LOCK`), or `Locked` with the holder's pid.
fn lock_or_refuse(dir: &Path, mut file: &File) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
            Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            })
        }
        Err(TryLockError::Error(e)) => Err(Error::io(dir.join("LOCK"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_owner_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(lock);
        DirLock::acquire(dir.path()).unwrap();
    }

    /// A store closed while a child process was being spawned: the child shares the lock
    /// until its exec (a lib test run failed 1 in 5 with `Locked` by its own pid).
    #[test]
    fn a_lock_our_process_lets_go_of_in_a_moment_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let shared = lock._file.as_ref().unwrap().try_clone().unwrap();
        drop(lock);
        let child = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            drop(shared);
        });
        DirLock::acquire(dir.path()).unwrap();
        child.join().unwrap();
    }
}
