//! Watching policy files: the directory of each watched file is watched (so
//! replacing a file by rename, as editors, `mv` and deploy tools do, is
//! seen), events for other files are ignored, and then:
//!
//! - a file renamed into place is whole (a rename is atomic): it is
//!   reloaded at once;
//! - a file written in place (`cp`, `>`) may be half-written: its reload
//!   starts once writes have stopped for [`super::reload::DEBOUNCE`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
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

/// How a watched file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Renamed into place: whole, reload now.
    Renamed,
    /// Created, written or otherwise touched: reload once writes stop.
    Written,
}

/// What an event means for the files named `names`: `None` if it is about
/// none of them.
pub fn classify(event: &Event, names: &BTreeSet<OsString>) -> Option<Change> {
    let ours = event
        .paths
        .iter()
        .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
    if !ours {
        return None;
    }
    Some(match event.kind {
        EventKind::Modify(ModifyKind::Name(_)) => Change::Renamed,
        _ => Change::Written,
    })
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
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<Event>| {
        match result {
            Ok(event) => {
                // A send fails only when the watch is being dropped.
                if let Some(change) = classify(&event, &names)
                    && tx.send(change).is_err()
                {
                    tracing::debug!("policy file event after the watch stopped");
                }
            }
            Err(e) => tracing::warn!("policy file watch error: {e}"),
        }
    })?;
    for dir in &dirs {
        watcher.watch(Path::new(dir), RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for policy changes");
    }
    let task = tokio::spawn(reload_on(rx, manager));
    Ok(FileWatch {
        _watcher: watcher,
        task,
    })
}

/// Reload after each batch of changes: at once if a file was renamed into
/// place, else when no event has come for [`DEBOUNCE`]; one more if changes
/// came while reloading.
async fn reload_on(mut changes: mpsc::UnboundedReceiver<Change>, manager: Arc<PolicyManager>) {
    while let Some(mut change) = changes.recv().await {
        while change == Change::Written {
            match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                Ok(Some(next)) => change = next,
                Ok(None) => return,
                // Quiet for the whole period: the writes are done.
                Err(_quiet) => break,
            }
        }
        while changes.try_recv().is_ok() {}
        let manager = manager.clone();
        match tokio::task::spawn_blocking(move || manager.reload(false)).await {
            Ok(_already_logged) => {}
            Err(e) => tracing::error!("policy reload task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn a_rename_into_place_is_at_once_and_a_write_waits() {
        let names = BTreeSet::from([OsString::from("p.wasm")]);
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let created = EventKind::Create(CreateKind::File);
        assert_eq!(
            classify(&event(renamed, "/d/p.wasm"), &names),
            Some(Change::Renamed)
        );
        // `cp` creates, then writes: neither may be read at once.
        assert_eq!(
            classify(&event(written, "/d/p.wasm"), &names),
            Some(Change::Written)
        );
        assert_eq!(
            classify(&event(created, "/d/p.wasm"), &names),
            Some(Change::Written)
        );
        assert_eq!(classify(&event(renamed, "/d/other.wasm"), &names), None);
    }
}
