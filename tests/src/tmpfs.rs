//! A small tmpfs mounted for one test, so a full disk is real (ENOSPC from the kernel),
//! not simulated. Needs root, as every test machine of this project runs.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on a fresh directory. Panics if it cannot: a disk-full
    /// test that cannot fill a disk must fail, not pass.
    pub fn mount(mib: usize) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a mount point");
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs on {} failed (these tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
