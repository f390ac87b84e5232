//! What a crash loses: the span halves and tokens waiting in the correlator live in memory
//! only. The correlation task writes how many wait to a small file in the data dir (when
//! the number changed, at most once a second) and `clean` when it stops cleanly, so that a
//! peer starting after a crash can count what its previous run lost.

use std::path::{Path, PathBuf};

/// The file's name in the data dir.
const FILE: &str = "correlation-pending";

/// The record of the running peer.
#[derive(Debug)]
pub(crate) struct PendingRecord {
    path: PathBuf,
    written: Option<u64>,
}

impl PendingRecord {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(FILE), written: None }
    }

    /// What the previous run left: `Some(n)` when it did not stop cleanly, with `n` span
    /// halves waiting at its last record (tokens are not counted). Removes nothing; the next write replaces it.
    pub(crate) fn previous(&self) -> Option<u64> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the record of waiting span halves could not be read");
                return None;
            }
        };
        match text.trim() {
            "clean" => None,
            number => match number.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(path = %self.path.display(), "the record of waiting span halves is not a number; ignored");
                    None
                }
            },
        }
    }

    /// Records that `waiting` span halves wait now (if that changed).
    pub(crate) fn waiting(&mut self, waiting: u64) {
        if self.written != Some(waiting) {
            self.write(&waiting.to_string());
            self.written = Some(waiting);
        }
    }

    /// Records a clean stop: nothing waits.
    pub(crate) fn clean(&mut self) {
        self.write("clean");
    }

    fn write(&self, text: &str) {
        let temporary = self.path.with_extension("new");
        let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "the record of waiting span halves could not be written");
        }
    }
}
