//! What a policy instance may touch: deny-all WASI (no files, environment,
//! arguments, sockets or stdin), a memory limit, and stdout/stderr that go to
//! the router's log tagged with the policy's name.
//!
//! Guests are called synchronously from the router's tokio worker threads.
//! wasmtime-wasi's synchronous WASI runs its blocking calls through
//! `block_on`, which panics inside a runtime; [`add_to_linker`] therefore
//! replaces the calls a guest makes to print (stdout/stderr writes and
//! drops) with non-blocking ones, and makes waiting (`wasi:io/poll`, used by
//! `sleep`) a trap: a policy must never hold a router thread. A poll that
//! needs no wait (a zero timeout, as Go's runtime polls when its collector
//! restarts the world) answers what is ready. Any other host call that
//! panics is caught by the caller as a fault.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::sync::io::streams::StreamError as WitStreamError;
use wasmtime_wasi::p2::{
    DynOutputStream, DynPollable, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::imports::{self, PolicyHost};
use crate::config::Limits;

/// The WASI io package version wasmtime-wasi 48 defines (guests built for
/// any 0.2.x match it).
const WASI_IO: &str = "0.2.12";

/// Link what policies may import: contract 0.2's own imports
/// ([`super::imports`]), and wasmtime-wasi's synchronous WASI with the
/// blocking stream and poll calls replaced (see the module docs).
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    super::bindings::v2::RoutingPolicy::add_to_linker::<StoreState, HasSelf<imports::Host>>(
        linker,
        |state| &mut state.host,
    )?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);

    let mut streams = linker.instance(&format!("wasi:io/streams@{WASI_IO}"))?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, StoreState>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let out = store.data_mut().table.get_mut(&stream)?;
            let written = out.write(Bytes::from(bytes)).and_then(|()| out.flush());
            Ok((lower_stream_result(written)?,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, StoreState>, (stream,): (Resource<DynOutputStream>,)| {
            let flushed = store.data_mut().table.get_mut(&stream)?.flush();
            Ok((lower_stream_result(flushed)?,))
        },
    )?;

    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_IO}"))?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, StoreState>,
         (pollables,): (Vec<Resource<DynPollable>>,)|
         -> wasmtime::Result<(Vec<u32>,)> {
            let table = &mut store.data_mut().table;
            let mut ready = Vec::new();
            for (i, pollable) in (0u32..).zip(&pollables) {
                if ready_now(table, pollable)? {
                    ready.push(i);
                }
            }
            if ready.is_empty() {
                return Err(may_not_wait());
            }
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_store: StoreContextMut<'_, StoreState>,
         (_pollable,): (Resource<DynPollable>,)|
         -> wasmtime::Result<()> { Err(may_not_wait()) },
    )?;
    Ok(())
}

/// Whether `pollable` is ready without waiting. `pollable.ready` answers at
/// once, never pending; asked twice, since a deadline already past first
/// yields to the scheduler once (wasmtime-wasi's clocks).
fn ready_now(
    table: &mut ResourceTable,
    pollable: &Resource<DynPollable>,
) -> wasmtime::Result<bool> {
    use wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for _ in 0..2 {
        let borrowed = Resource::<DynPollable>::new_borrow(pollable.rep());
        let answer = std::pin::pin!(HostPollable::ready(table, borrowed)).poll(&mut cx);
        match answer {
            Poll::Ready(Ok(true)) => return Ok(true),
            Poll::Ready(Ok(false)) => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(false)
}

fn may_not_wait() -> wasmtime::Error {
    wasmtime::Error::msg(
        "policies may not wait or sleep (wasi:io/poll): every call runs on a router thread",
    )
}

/// Our streams (the guest log) never fail but by closing; a trap stays a trap.
fn lower_stream_result(result: StreamResult<()>) -> wasmtime::Result<Result<(), WitStreamError>> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(StreamError::Trap(e)) => Err(e),
        Err(StreamError::Closed | StreamError::LastOperationFailed(_)) => {
            Ok(Err(WitStreamError::Closed))
        }
    }
}

/// A guest's output line is cut at this many bytes, so a guest cannot make the
/// router buffer without bound.
const MAX_LOG_LINE: usize = 4096;

/// The data of every policy store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: MemoryLimit,
    /// Contract 0.2's imports.
    pub(super) host: imports::Host,
}

impl StoreState {
    /// A sandbox for the policy `name` within `limits` (its linear memory,
    /// its randomness's seed), whose imports reach `host`.
    pub fn new(name: &str, limits: &Limits, host: Arc<PolicyHost>) -> Self {
        let name: Arc<str> = Arc::from(name);
        // `WasiCtxBuilder` grants nothing unless asked: no preopened
        // directories, no environment or arguments, empty stdin, and every
        // socket address denied. Clocks and random stay: std needs them.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestLog::new(name.clone(), "stdout"))
            .stderr(GuestLog::new(name, "stderr"));
        if let Some(seed) = limits.random_seed {
            use rand::SeedableRng;
            wasi.secure_random(rand::rngs::StdRng::seed_from_u64(seed))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(seed ^ 1))
                .insecure_random_seed(u128::from(seed));
        }
        let wasi = wasi.build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryLimit {
                bytes: limits.memory,
                current: 0,
            },
            host: imports::Host::new(host),
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The error a call fails with when the guest grows its memory past the
/// limit. Growing fails with a trap rather than returning -1, so the fault is
/// named instead of surfacing as the allocator's `unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("policy tried to grow its memory to {desired} bytes, past its limit of {limit}")]
pub struct MemoryLimitHit {
    desired: usize,
    limit: usize,
}

/// Caps a store's linear memory at `bytes`, and tracks its size.
pub struct MemoryLimit {
    bytes: usize,
    /// Linear memory of the instance, in bytes, as of its last growth.
    pub current: usize,
}

/// Table elements an instance may have: far beyond what policies use.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            return Err(MemoryLimitHit {
                desired,
                limit: self.bytes,
            }
            .into());
        }
        let allowed = maximum.is_none_or(|max| desired <= max);
        if allowed {
            self.current = desired;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

/// A guest output stream that logs complete lines through `tracing`.
#[derive(Clone)]
struct GuestLog {
    policy: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestLog {
    fn new(policy: Arc<str>, stream: &'static str) -> Self {
        GuestLog {
            policy,
            stream,
            pending: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        if pending.len() > MAX_LOG_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LOG_LINE)]);
        tracing::info!(target: "policy", policy = %self.policy, stream = self.stream, "{line}");
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LOG_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
