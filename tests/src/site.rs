//! [`Site`]: a data directory and keyring that outlive any one node, for tests that restart
//! nodes, restore backups or inspect the store on disk.

use std::path::PathBuf;

use crate::builder::{write_keyring, NodeBuilder};

pub struct Site {
    dir: tempfile::TempDir,
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

impl Site {
    /// A fresh site whose keyring holds one key, `site-key`.
    pub fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("a site directory"),
        };
        write_keyring(&site.keyring(), "site-key");
        site
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn keyring(&self) -> PathBuf {
        self.path("keyring.toml")
    }

    /// The default data directory, `data`.
    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// A node on the default data directory with no bundle configured (it serves what the
    /// store holds).
    pub fn node(&self) -> NodeBuilder {
        self.node_on("data")
    }

    /// A node on the data directory `data` of this site.
    pub fn node_on(&self, data: &str) -> NodeBuilder {
        NodeBuilder::new()
            .unset("model.bundle")
            .set_str("data_dir", &self.path(data).display().to_string())
            .set_str("artifacts.keyring", &self.keyring().display().to_string())
    }

    pub fn staging_is_empty(&self) -> bool {
        std::fs::read_dir(self.data().join("staging"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    }

    pub fn artifact_files(&self) -> usize {
        std::fs::read_dir(self.data().join("artifacts"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}
