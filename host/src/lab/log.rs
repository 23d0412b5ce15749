//! The decision log's writer: records go through a bounded channel to one
//! thread that writes JSON lines (to a file rotated by size, or stdout)
//! and keeps the latest for `GET /decisions`. A request never waits for
//! it: a record that finds the channel full is dropped and counted.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::record::{DecisionRecord, OutcomeRecord, ShadowAnswer};
use crate::config::{DecisionLogConfig, LogTarget};
use crate::metrics as m;
use crate::policy::Outcome;

/// The latest records `GET /decisions` can serve.
pub const RECENT: usize = 1024;

/// Where decision records go. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    inner: Arc<Inner>,
}

struct Inner {
    to: SyncSender<Finished>,
    sample: f64,
    text: bool,
    dropped: AtomicU64,
    /// The latest records, as written, newest last.
    recent: Mutex<VecDeque<Arc<str>>>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl DecisionLog {
    /// Open the log's file (or stdout) and start its writer thread.
    pub fn start(config: &DecisionLogConfig) -> anyhow::Result<Self> {
        let out = Out::open(&config.to, config.max_bytes)?;
        let (to, from) = std::sync::mpsc::sync_channel(config.buffer);
        let inner = Arc::new(Inner {
            to,
            sample: config.sample,
            text: config.text,
            dropped: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        });
        let writer = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_all(from, out, writer))?;
        Ok(DecisionLog { inner })
    }

    /// Whether to record the request that starts now (`--decision-log-sample`).
    pub fn sampled(&self) -> bool {
        self.inner.sample >= 1.0 || fastrand::f64() < self.inner.sample
    }

    /// Whether records carry the routing text.
    pub fn with_text(&self) -> bool {
        self.inner.text
    }

    /// Records dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The latest `n` records written, oldest first, as JSON.
    pub fn recent(&self, n: usize) -> Vec<Arc<str>> {
        let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .skip(recent.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    fn send(&self, record: Finished) {
        match self.inner.to.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::DECISIONS_DROPPED).increment(1);
            }
        }
    }
}

/// A request's record while it is served: the decision is in, the outcome
/// comes with its end ([`Draft::ended`]); written when dropped, unless a
/// retry took it over ([`Draft::retried`]).
#[derive(Debug)]
pub struct Draft {
    /// The record so far.
    pub record: DecisionRecord,
    /// The shadows' answers to come, when shadows were asked.
    pub shadows: Option<Awaited>,
    log: Option<DecisionLog>,
}

/// The answers of the shadows asked about a request: they come from the
/// shadows' threads, usually after the request ended, so its record waits
/// for them at the writer (at most [`SHADOW_GRACE`]).
#[derive(Debug)]
pub struct Awaited {
    /// Where the answers arrive.
    pub answers: Arc<Mutex<Vec<ShadowAnswer>>>,
    /// How many will.
    pub asked: usize,
}

/// How long a finished record waits at the writer for its shadows'
/// answers; those later are not in it (the shadows' counts still are).
pub const SHADOW_GRACE: Duration = Duration::from_millis(100);

impl Awaited {
    fn all_in(&self) -> bool {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.asked
    }
}

/// A request's record, ended, on its way to the writer.
struct Finished {
    record: DecisionRecord,
    awaited: Option<Awaited>,
    ended: Instant,
}

impl Draft {
    /// A record of `record`'s decision, to be written to `log`.
    pub fn new(log: &DecisionLog, record: DecisionRecord) -> Self {
        Draft {
            record,
            shadows: None,
            log: Some(log.clone()),
        }
    }

    /// The attempt ended with `outcome`.
    pub fn ended(&mut self, outcome: &Outcome) {
        self.record.outcome = OutcomeRecord::from(outcome);
    }

    /// The request was retried and `next` records the new decision: it
    /// takes the count of attempts over, and this one is not written.
    pub fn retried(mut self, next: &mut Draft) {
        next.record.attempts = self.record.attempts + 1;
        self.log = None;
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        let Some(log) = self.log.take() else { return };
        log.send(Finished {
            record: std::mem::take(&mut self.record),
            awaited: self.shadows.take(),
            ended: Instant::now(),
        });
    }
}

/// The writer's output.
enum Out {
    Stdout(std::io::Stdout),
    File {
        path: PathBuf,
        file: BufWriter<File>,
        written: u64,
        max: u64,
    },
}

impl Out {
    fn open(to: &LogTarget, max: u64) -> anyhow::Result<Self> {
        Ok(match to {
            LogTarget::Stdout => Out::Stdout(std::io::stdout()),
            LogTarget::File(path) => {
                let file = append(path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the decision log {}: {e} (give a writable file to --decision-log, or - for stdout)",
                        path.display()
                    )
                })?;
                let written = file.metadata().map_or(0, |m| m.len());
                Out::File {
                    path: path.clone(),
                    file: BufWriter::new(file),
                    written,
                    max,
                }
            }
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Out::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            Out::File {
                path,
                file,
                written,
                max,
            } => {
                if *written > 0 && *written + line.len() as u64 + 1 > *max {
                    file.flush()?;
                    std::fs::rename(&*path, rotated(path))?;
                    *file = BufWriter::new(append(path)?);
                    *written = 0;
                }
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")?;
                *written += line.len() as u64 + 1;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stdout(out) => out.flush(),
            Out::File { file, .. } => file.flush(),
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `PATH.1`, where a full log goes.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The writer thread's state: where lines go, whether writing fails (said
/// once until it works again), the records waiting for their shadows'
/// answers, and the log whose recent records it keeps.
struct Writer {
    out: Out,
    failing: bool,
    waiting: VecDeque<Finished>,
    log: std::sync::Weak<Inner>,
}

impl Writer {
    /// Write `finished` now, or once its shadows answered.
    fn take(&mut self, finished: Finished) {
        match &finished.awaited {
            Some(awaited) if !awaited.all_in() => self.waiting.push_back(finished),
            _ => self.write_out(finished),
        }
    }

    /// Write the waiting records whose answers are in or whose grace is
    /// over (all of them when `all`), and flush; whether some still wait.
    fn batch_done(&mut self, all: bool) -> bool {
        let mut still = VecDeque::with_capacity(self.waiting.len());
        while let Some(finished) = self.waiting.pop_front() {
            let ready = all
                || finished.ended.elapsed() >= SHADOW_GRACE
                || finished.awaited.as_ref().is_none_or(Awaited::all_in);
            if ready {
                self.write_out(finished);
            } else {
                still.push_back(finished);
            }
        }
        self.waiting = still;
        let flushed = self.out.flush();
        self.report(flushed);
        !self.waiting.is_empty()
    }

    fn write_out(&mut self, mut finished: Finished) {
        if let Some(awaited) = &finished.awaited {
            let answers = awaited.answers.lock().unwrap_or_else(|e| e.into_inner());
            finished.record.shadows.clone_from(&answers);
        }
        self.write(finished.record);
    }

    fn write(&mut self, record: DecisionRecord) {
        let line: Arc<str> = match serde_json::to_string(&record) {
            Ok(line) => line.into(),
            Err(e) => {
                tracing::error!("a decision record did not serialize: {e}");
                return;
            }
        };
        let written = self.out.write_line(&line);
        if written.is_ok() {
            metrics::counter!(m::DECISIONS_WRITTEN).increment(1);
        }
        self.report(written);
        let Some(log) = self.log.upgrade() else {
            return;
        };
        let mut recent = log.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(line);
    }

    fn report(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!("cannot write the decision log: {e}");
            }
            Err(_) => {}
        }
    }
}

/// The writer thread: until every sender is gone, write each record and
/// keep it among the recent ones; flush after each batch
/// ([`super::take_in_batches`]).
fn write_all(from: Receiver<Finished>, out: Out, log: std::sync::Weak<Inner>) {
    let mut writer = Writer {
        out,
        failing: false,
        waiting: VecDeque::new(),
        log,
    };
    super::take_in_batches(&from, &mut writer, Writer::take, |w| w.batch_done(false));
    writer.batch_done(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_is_rotated_to_path_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let mut out = Out::open(&LogTarget::File(path.clone()), 100).unwrap();
        for n in 0..3 {
            out.write_line(&format!("{n}{}", "x".repeat(40))).unwrap();
        }
        out.flush().unwrap();
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2);
        assert!(old.starts_with('0'));
        assert_eq!(
            new.lines().collect::<Vec<_>>(),
            [format!("2{}", "x".repeat(40))]
        );
    }
}
