//! Watching policy files: the directory of each watched file is watched (so
//! replacing a file by rename, as editors and `cp` do, is seen), events for
//! other files are ignored, and a reload starts once events have stopped for
//! [`super::reload::DEBOUNCE`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::reload::{DEBOUNCE, PolicyManager};

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
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
pub fn watch(files: &[PathBuf], manager: Arc<PolicyManager>) -> notify::Result<FileWatch> {
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
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
                // A send fails only when the watch is being dropped.
                if ours && tx.send(()).is_err() {
                    tracing::debug!("policy file event after the watch stopped");
                }
            }
            Err(e) => tracing::warn!("policy file watch error: {e}"),
        })?;
    for dir in &dirs {
        watcher.watch(Path::new(dir), RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for policy changes");
    }
    let task = tokio::spawn(debounce_and_reload(rx, manager));
    Ok(FileWatch {
        _watcher: watcher,
        task,
    })
}

async fn debounce_and_reload(mut events: mpsc::UnboundedReceiver<()>, manager: Arc<PolicyManager>) {
    while events.recv().await.is_some() {
        // Wait for quiet: every new event restarts the wait.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
        let manager = manager.clone();
        match tokio::task::spawn_blocking(move || manager.reload(false)).await {
            Ok(_already_logged) => {}
            Err(e) => tracing::error!("policy reload task failed: {e}"),
        }
    }
}
