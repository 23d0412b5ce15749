//! Watching policy files: the directory of each watched file is watched (so
//! replacing a file by rename, as editors and `cp` do, is seen), events for
//! other files are ignored, and a reload starts once events have stopped for
//! [`super::reload::DEBOUNCE`] (notify-debouncer-full's quiet period).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use super::reload::{DEBOUNCE, PolicyManager};

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatch")
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch `files` and reload `manager` when any of them changes.
pub fn watch(
    files: &[PathBuf],
    manager: Arc<PolicyManager>,
) -> notify_debouncer_full::notify::Result<FileWatch> {
    let names: BTreeSet<OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(OsString::from))
        .collect();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        match result {
            Ok(events) => {
                let ours = events
                    .iter()
                    .flat_map(|e| &e.paths)
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
                // A send fails only when the watch is being dropped.
                if ours && tx.send(()).is_err() {
                    tracing::debug!("policy file event after the watch stopped");
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("policy file watch error: {e}");
                }
            }
        }
    })?;
    for dir in &dirs {
        debouncer.watch(Path::new(dir), RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for policy changes");
    }
    let task = tokio::spawn(reload_on(rx, manager));
    Ok(FileWatch {
        _debouncer: debouncer,
        task,
    })
}

/// One reload per quiet period's batch of changes (and one more if changes
/// came while reloading).
async fn reload_on(mut changes: mpsc::UnboundedReceiver<()>, manager: Arc<PolicyManager>) {
    while changes.recv().await.is_some() {
        while changes.try_recv().is_ok() {}
        let manager = manager.clone();
        match tokio::task::spawn_blocking(move || manager.reload(false)).await {
            Ok(_already_logged) => {}
            Err(e) => tracing::error!("policy reload task failed: {e}"),
        }
    }
}
