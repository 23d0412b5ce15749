//! The precise prefix index: which KV cache pages each worker holds, as the
//! worker's own KV cache events say ([`crate::events`] feeds it), not what
//! this router happened to send it.
//!
//! Pages are keyed by the router's own chain of hashes over their token ids
//! (a page's key is xxh3 of its tokens, seeded with its parent's key), so
//! the engines' hash algorithms and seeds never matter and two workers
//! holding the same prefix hold the same keys. Each worker keeps a map from
//! the engine's hash of a page to the router's key, for the events that
//! name pages by the engine's hash only (a child's parent, a removal).
//!
//! Reads ([`Precise::matched`]) take shard read locks; each worker's events
//! are applied by one task, under that worker's own lock and the write lock
//! of each shard it touches, one page at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A worker id, as the registry numbers them.
pub type WorkerId = u32;

/// The router's key of a page: the hash of its tokens chained on its
/// parent's key.
pub type PageKey = u64;

/// Pages one worker may hold in the index; its stores past this are dropped
/// (and counted) until removals make room.
pub const MAX_PAGES_PER_WORKER: usize = 1 << 20;
/// Pages the whole index may hold (a page held by two workers counts twice).
pub const MAX_PAGES: usize = 1 << 24;

const SHARDS: usize = 64;

/// Where a worker holds a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    /// In GPU memory: a hit costs nothing.
    Gpu,
    /// Offloaded to host memory: a hit costs a copy back.
    Cpu,
    /// Offloaded to disk or remote storage.
    Disk,
}

impl Medium {
    fn bit(self) -> u8 {
        match self {
            Medium::Gpu => 1,
            Medium::Cpu => 2,
            Medium::Disk => 4,
        }
    }
}

/// A worker's matched prefix of a request, in tokens, by where the pages
/// are: `gpu` counts the leading pages all on GPU, `cpu` those on GPU or
/// CPU, `disk` those anywhere. So `gpu <= cpu <= disk`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matched {
    /// Tokens of the longest prefix held on GPU.
    pub gpu: u32,
    /// Tokens of the longest prefix held on GPU or CPU.
    pub cpu: u32,
    /// Tokens of the longest prefix held anywhere.
    pub disk: u32,
}

/// Why an event's pages were not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Token ids do not fill the pages.
    #[error("{tokens} token ids do not fill {pages} pages of {block_size}")]
    Shape {
        /// Token ids in the event.
        tokens: usize,
        /// Pages (engine hashes) in the event.
        pages: usize,
        /// Tokens per page.
        block_size: u32,
    },
    /// The worker's page size changed without a clear.
    #[error("page size {got}, where the worker's pages so far have {had}")]
    BlockSize {
        /// Its page size so far.
        had: u32,
        /// The event's.
        got: u32,
    },
    /// The parent page is unknown: an event was missed.
    #[error("the parent page {0:#x} is unknown (an event was missed)")]
    Orphan(u64),
    /// The worker or the index holds as many pages as it may.
    #[error("the index is full")]
    Full,
}

/// One worker's pages.
#[derive(Debug)]
struct Pages {
    /// The worker's small number in this index, which holders carry (see
    /// [`Dense`]).
    dense: u32,
    /// Tokens per page; 0 until the first store.
    block_size: u32,
    /// Engine hash -> (router key, media it is held on).
    by_engine: HashMap<u64, (PageKey, u8)>,
}

/// Who holds a page (by [`Pages::dense`]), and where.
#[derive(Debug, Clone, Copy)]
struct Holder {
    dense: u32,
    media: u8,
}

/// Small numbers for the workers the index knows, reused once a worker is
/// dropped: a match maps holders to the workers it was asked about through
/// an array indexed by them, not a hash lookup per holder per page.
#[derive(Debug, Default)]
struct Dense {
    next: u32,
    free: Vec<u32>,
}

/// Some of the pages: key -> who holds it.
type Shard = RwLock<HashMap<PageKey, Vec<Holder>>>;

/// Pages a worker stored, as one `BlockStored` event names them.
#[derive(Debug, Clone, Copy)]
pub struct StoredPages<'a> {
    /// Where they are.
    pub medium: Medium,
    /// The engine's hash of the first page's parent; none for the first
    /// pages of a sequence, chained from `seed`.
    pub parent: Option<u64>,
    /// The engine's hashes of the pages.
    pub hashes: &'a [u64],
    /// Their tokens, `block_size` per page.
    pub tokens: &'a [u32],
    /// Tokens per page.
    pub block_size: u32,
    /// 0 for the base model; an adapter's pages chain from its own seed.
    pub seed: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Precise {
    shards: Box<[Shard]>,
    workers: RwLock<HashMap<WorkerId, Arc<Mutex<Pages>>>>,
    dense: Mutex<Dense>,
    entries: AtomicUsize,
    limit: usize,
    per_worker: usize,
}

impl Default for Precise {
    fn default() -> Self {
        Precise::with_limits(MAX_PAGES, MAX_PAGES_PER_WORKER)
    }
}

/// The key of the page of `tokens` whose parent's key is `parent`.
pub fn page_key(parent: PageKey, tokens: &[u32]) -> PageKey {
    chained(parent, tokens, &mut Vec::new())
}

/// [`page_key`], with `bytes` as scratch space.
fn chained(parent: PageKey, tokens: &[u32], bytes: &mut Vec<u8>) -> PageKey {
    bytes.clear();
    for t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    xxh3_64_with_seed(bytes, parent)
}

/// The keys of the full pages of `tokens`, chained from `seed` (0 for the
/// base model; a LoRA adapter's pages chain from its own seed).
pub fn page_keys(tokens: &[u32], block_size: u32, seed: u64) -> Vec<PageKey> {
    let mut parent = seed;
    let mut bytes = Vec::new();
    tokens
        .chunks_exact(block_size.max(1) as usize)
        .map(|page| {
            parent = chained(parent, page, &mut bytes);
            parent
        })
        .collect()
}

impl Precise {
    /// An index holding at most `limit` pages, `per_worker` of them for one
    /// worker.
    pub fn with_limits(limit: usize, per_worker: usize) -> Self {
        Precise {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            workers: RwLock::default(),
            dense: Mutex::default(),
            entries: AtomicUsize::new(0),
            limit,
            per_worker,
        }
    }

    fn shard(&self, key: PageKey) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    fn pages(&self, worker: WorkerId) -> Arc<Mutex<Pages>> {
        if let Some(pages) = self
            .workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&worker)
        {
            return pages.clone();
        }
        self.workers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(worker)
            .or_insert_with(|| {
                let mut dense = self.dense.lock().unwrap_or_else(|e| e.into_inner());
                let number = dense.free.pop().unwrap_or_else(|| {
                    dense.next += 1;
                    dense.next - 1
                });
                Arc::new(Mutex::new(Pages {
                    dense: number,
                    block_size: 0,
                    by_engine: HashMap::new(),
                }))
            })
            .clone()
    }

    /// Set the media bits of the worker numbered `dense` for the page `key`
    /// to `media` (0: not held).
    fn set_media(&self, key: PageKey, dense: u32, media: u8) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        let holders = shard.entry(key).or_default();
        match holders.iter().position(|h| h.dense == dense) {
            Some(at) if media == 0 => {
                holders.swap_remove(at);
            }
            Some(at) => holders[at].media = media,
            None if media != 0 => holders.push(Holder { dense, media }),
            None => {}
        }
        if holders.is_empty() {
            shard.remove(&key);
        }
    }

    /// Record that `worker` stored `pages`. Pages stored before an error
    /// stay.
    pub fn store(&self, worker: WorkerId, pages: StoredPages<'_>) -> Result<(), StoreError> {
        let StoredPages {
            medium,
            parent,
            hashes,
            tokens,
            block_size,
            seed,
        } = pages;
        if block_size == 0 || tokens.len() != hashes.len() * block_size as usize {
            return Err(StoreError::Shape {
                tokens: tokens.len(),
                pages: hashes.len(),
                block_size,
            });
        }
        let held = self.pages(worker);
        let mut pages = held.lock().unwrap_or_else(|e| e.into_inner());
        if pages.by_engine.is_empty() {
            pages.block_size = block_size;
        } else if pages.block_size != block_size {
            return Err(StoreError::BlockSize {
                had: pages.block_size,
                got: block_size,
            });
        }
        let mut key = match parent {
            None => seed,
            Some(engine) => match pages.by_engine.get(&engine) {
                Some(&(key, _)) => key,
                None => return Err(StoreError::Orphan(engine)),
            },
        };
        for (hash, page) in hashes.iter().zip(tokens.chunks_exact(block_size as usize)) {
            key = page_key(key, page);
            let media = match pages.by_engine.get(hash).copied() {
                Some((held, media)) if held == key => media | medium.bit(),
                // The engine reuses a hash for other tokens (or a parent):
                // the page it named before is gone.
                Some((held, _)) => {
                    self.set_media(held, pages.dense, 0);
                    medium.bit()
                }
                None => {
                    if pages.by_engine.len() >= self.per_worker
                        || self.entries.load(Ordering::Relaxed) >= self.limit
                    {
                        return Err(StoreError::Full);
                    }
                    self.entries.fetch_add(1, Ordering::Relaxed);
                    medium.bit()
                }
            };
            pages.by_engine.insert(*hash, (key, media));
            self.set_media(key, pages.dense, media);
        }
        Ok(())
    }

    /// Record that `worker` dropped the pages the engine calls `hashes` from
    /// `medium`. Unknown pages are ignored.
    pub fn remove(&self, worker: WorkerId, medium: Medium, hashes: &[u64]) {
        let pages = self.pages(worker);
        let mut pages = pages.lock().unwrap_or_else(|e| e.into_inner());
        for hash in hashes {
            let Some(&(key, media)) = pages.by_engine.get(hash) else {
                continue;
            };
            let media = media & !medium.bit();
            if media == 0 {
                pages.by_engine.remove(hash);
                self.entries.fetch_sub(1, Ordering::Relaxed);
            } else {
                pages.by_engine.insert(*hash, (key, media));
            }
            self.set_media(key, pages.dense, media);
        }
    }

    /// Forget every page of `worker` (its cache was cleared, it restarted,
    /// or its events can no longer be trusted).
    pub fn clear(&self, worker: WorkerId) {
        let pages = self.pages(worker);
        let mut pages = pages.lock().unwrap_or_else(|e| e.into_inner());
        let held = std::mem::take(&mut pages.by_engine);
        pages.block_size = 0;
        self.entries.fetch_sub(held.len(), Ordering::Relaxed);
        for (key, _) in held.into_values() {
            self.set_media(key, pages.dense, 0);
        }
    }

    /// Start holding `worker`'s pages: its events are followed from now on
    /// (see [`Precise::follows`]).
    pub fn follow(&self, worker: WorkerId) {
        self.pages(worker);
    }

    /// Whether `worker`'s events are followed: it was [`Precise::follow`]ed
    /// (or stored pages) and not dropped since.
    pub fn follows(&self, worker: WorkerId) -> bool {
        self.workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&worker)
    }

    /// Forget `worker` altogether (it left the fleet).
    pub fn drop_worker(&self, worker: WorkerId) {
        self.clear(worker);
        let removed = self
            .workers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&worker);
        if let Some(pages) = removed {
            // Cleared: no holder carries its number any more.
            let number = pages.lock().unwrap_or_else(|e| e.into_inner()).dense;
            self.dense
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free
                .push(number);
        }
    }

    /// Pages held, over all workers.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether no worker holds a page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pages `worker` holds.
    pub fn pages_of(&self, worker: WorkerId) -> usize {
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        workers.get(&worker).map_or(0, |p| {
            p.lock().unwrap_or_else(|e| e.into_inner()).by_engine.len()
        })
    }

    /// Whether some worker holds every whole page of `tokens`, the start of
    /// a prompt: only then can the pages after them match. The router
    /// tokenizes a prompt on only while this holds.
    pub fn holds_every_page_of(&self, tokens: &[u32]) -> bool {
        let sizes: Vec<(WorkerId, u32)> = {
            let held = self.workers.read().unwrap_or_else(|e| e.into_inner());
            held.iter()
                .map(|(&w, p)| (w, p.lock().unwrap_or_else(|e| e.into_inner()).block_size))
                .filter(|&(_, block_size)| block_size > 0)
                .collect()
        };
        let ids: Vec<WorkerId> = sizes.iter().map(|&(w, _)| w).collect();
        let len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        self.matched(tokens, &ids)
            .iter()
            .zip(&sizes)
            .any(|(m, &(_, block_size))| m.disk >= len / block_size * block_size)
    }

    /// Each of `workers`' matched prefix of the base-model request `tokens`,
    /// in their order. A worker that holds no pages matches nothing.
    pub fn matched(&self, tokens: &[u32], workers: &[WorkerId]) -> Vec<Matched> {
        let mut out = vec![Matched::default(); workers.len()];
        // (page size, number) of each worker asked about; (0, _) for one
        // without pages.
        let known: Vec<(u32, u32)> = {
            let held = self.workers.read().unwrap_or_else(|e| e.into_inner());
            workers
                .iter()
                .map(|w| {
                    held.get(w).map_or((0, 0), |p| {
                        let p = p.lock().unwrap_or_else(|e| e.into_inner());
                        (p.block_size, p.dense)
                    })
                })
                .collect()
        };
        let sizes: Vec<u32> = known.iter().map(|k| k.0).collect();
        let mut distinct: Vec<u32> = sizes.iter().copied().filter(|&b| b != 0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for block_size in distinct {
            let group: Vec<usize> = (0..workers.len())
                .filter(|&i| sizes[i] == block_size)
                .collect();
            self.match_group(tokens, block_size, &known, &group, &mut out);
        }
        out
    }

    /// [`Precise::matched`] for the workers at `group` (positions in
    /// `known`, their page size and number), all with pages of
    /// `block_size`.
    fn match_group(
        &self,
        tokens: &[u32],
        block_size: u32,
        known: &[(u32, u32)],
        group: &[usize],
        out: &mut [Matched],
    ) {
        // A worker's number -> its position, for those asked about.
        let top = group.iter().map(|&i| known[i].1).max().unwrap_or(0) as usize;
        let mut slot = vec![usize::MAX; top + 1];
        for &i in group {
            slot[known[i].1 as usize] = i;
        }
        // Per worker: whether its GPU, GPU-or-CPU and any-medium prefixes
        // still run.
        let mut open: Vec<[bool; 3]> = vec![[true; 3]; known.len()];
        let mut still_open = group.len();
        let mut seen = vec![0u8; known.len()];
        for key in page_keys(tokens, block_size, 0) {
            {
                let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
                for holder in shard.get(&key).into_iter().flatten() {
                    if let Some(&i) = slot.get(holder.dense as usize)
                        && i != usize::MAX
                    {
                        seen[i] = holder.media;
                    }
                }
            }
            for &i in group {
                let media = std::mem::take(&mut seen[i]);
                if !open[i][2] {
                    continue;
                }
                let levels = [
                    media & Medium::Gpu.bit() != 0,
                    media & (Medium::Gpu.bit() | Medium::Cpu.bit()) != 0,
                    media != 0,
                ];
                let counts = [&mut out[i].gpu, &mut out[i].cpu, &mut out[i].disk];
                for ((open, held), count) in open[i].iter_mut().zip(levels).zip(counts) {
                    *open &= held;
                    if *open {
                        *count += block_size;
                    }
                }
                if !open[i][2] {
                    still_open -= 1;
                }
            }
            if still_open == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
