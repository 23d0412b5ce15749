//! The client that forwards clients' requests to workers: hyper's pooled
//! HTTP/1.1 client over rustls, and nothing else on the way. Forwarding is
//! most of what the router does per request, and reqwest's layers (URL
//! parsing, redirect policy, boxed bodies and futures) cost about a third
//! of the proxy's CPU time per request (BENCHMARKS.md). The router's own
//! calls to workers (health checks, model discovery, `/flush_cache`, the
//! load monitor) go through reqwest, which is more convenient there.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ClientTls;
use crate::tls::TlsError;

/// One piece of a worker's response body.
pub type Chunk = Result<Bytes, hyper::Error>;

/// Why a worker gave no response headers.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The worker's URL and the request's path make no URI.
    #[error("the worker's URL and the request's path make no valid URI")]
    Uri,
    /// Could not connect, or the connection broke before the headers: the
    /// root cause (the fleet's addresses are not in it).
    #[error("{0}")]
    Unreachable(String),
}

/// How long an idle worker connection is kept for reuse. This and
/// [`POOL_MAX_IDLE_PER_WORKER`] also set the pool of the router's own calls
/// to workers ([`crate::client`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The largest worker answer the router reads whole to pass on (errors,
/// informational routes, a PD prefill's answer); a longer one is a 502.
pub const MAX_RELAYED_BODY: usize = 16 << 20;

/// Why a worker's body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the reader's limit.
    #[error("the worker's answer passed {0} bytes")]
    TooLarge(usize),
    /// The connection broke.
    #[error("the worker's answer broke off: {0}")]
    Broken(String),
    /// Not whole by the reader's deadline.
    #[error("the worker's answer did not end in time")]
    Timeout,
}

/// Idle connections kept per worker (per serving thread, here).
pub const POOL_MAX_IDLE_PER_WORKER: usize = 1024;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// This thread's pools, by [`Upstream::id`].
    static POOLS: RefCell<Vec<(u64, Pool)>> = const { RefCell::new(Vec::new()) };
}

/// Pooled HTTP/1.1 connections to workers, plain or TLS (extra roots and a
/// client certificate from [`ClientTls`]).
///
/// Each thread that sends keeps its own pool: a worker connection's task
/// runs on the thread that opened it, so with the router's one runtime per
/// serving thread ([`crate::server`]) a request never wakes another thread.
/// The pools live as long as the serving threads.
pub struct Upstream {
    /// Tells this client's pools from other routers' in the same process.
    id: u64,
    connector: HttpsConnector<HttpConnector>,
}

impl Upstream {
    /// A client trusting the webpki roots plus `tls`'s, presenting `tls`'s
    /// client certificate if set, that gives up connecting after
    /// `connect_timeout`.
    pub fn new(tls: &ClientTls, connect_timeout: Duration) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls.rustls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Upstream {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            connector,
        })
    }

    /// `f` with this thread's pool, made on first use.
    fn with_pool<R>(&self, f: impl FnOnce(&Pool) -> R) -> R {
        POOLS.with_borrow_mut(|pools| {
            let at = match pools.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    let pool = Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_WORKER)
                        .pool_timer(TokioTimer::new())
                        .build(self.connector.clone());
                    pools.push((self.id, pool));
                    pools.len() - 1
                }
            };
            f(&pools[at].1)
        })
    }

    /// Send `body` to `url` (a worker's base URL and the path and query)
    /// with `headers`; resolves when the response headers arrived.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, UpstreamError> {
        let uri: Uri = url.parse().map_err(|_| UpstreamError::Uri)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match self.with_pool(|pool| pool.request(request)).await {
            Ok(response) => Ok(Response(response)),
            Err(e) => Err(UpstreamError::Unreachable(root_cause(&e))),
        }
    }
}

/// The innermost error's message, without the client's wrapping.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// A worker's response: headers arrived, the body streams.
#[derive(Debug)]
pub struct Response(hyper::Response<Incoming>);

impl Response {
    /// The worker's status.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    /// The worker's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.0.headers()
    }

    /// The whole body, if it is at most `limit` bytes and ends by
    /// `deadline`.
    pub async fn read_whole(
        self,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, BodyError> {
        let read = http_body_util::Limited::new(self.0.into_body(), limit).collect();
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(body)) => Ok(body.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge(limit))
            }
            Ok(Err(e)) => Err(BodyError::Broken(root_cause(&*e))),
            Err(_elapsed) => Err(BodyError::Timeout),
        }
    }

    /// The body, piece by piece as it arrives.
    pub fn bytes_stream(self) -> BodyDataStream<Incoming> {
        BodyDataStream::new(self.0.into_body())
    }

    /// The body as it arrives, for passing on.
    pub fn into_body(self) -> Incoming {
        self.0.into_body()
    }

    /// A small answer (an error, an informational route's), relayed whole
    /// with its status and content type, if it is at most
    /// [`MAX_RELAYED_BODY`] and ends by `deadline`.
    pub async fn relay(
        self,
        deadline: tokio::time::Instant,
    ) -> Result<axum::response::Response, BodyError> {
        use axum::response::IntoResponse;
        let status = self.status();
        let content_type = self.headers().get("content-type").cloned();
        let body = self.read_whole(MAX_RELAYED_BODY, deadline).await?;
        let mut out = (status, body).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert("content-type", ct);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive worker that answers every request `ok` and counts the
    /// connections it accepted.
    async fn counting_worker() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n @ 1..) = socket.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        // Bodies are empty: a request ends with its head.
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            socket.write_all(reply).await.unwrap();
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn two_requests(upstream: &Upstream, url: &str) {
        for _ in 0..2 {
            let response = upstream
                .send(Method::GET, url, HeaderMap::new(), Bytes::new())
                .await
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let body = response.read_whole(16, deadline).await.unwrap();
            assert_eq!(body, "ok");
        }
    }

    #[tokio::test]
    async fn a_body_read_whole_is_capped() {
        let (url, _) = counting_worker().await;
        let upstream = Upstream::new(&ClientTls::default(), Duration::from_secs(10)).unwrap();
        let response = upstream
            .send(Method::GET, &url, HeaderMap::new(), Bytes::new())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let read = response.read_whole(1, deadline).await;
        assert!(matches!(read, Err(BodyError::TooLarge(1))), "{read:?}");
    }

    /// `work` on a new thread with its own single-threaded runtime, as the
    /// router's serving threads have.
    fn on_a_serving_thread(
        work: impl Future<Output = ()> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work)
        })
    }

    /// Issue 15: there was no connect timeout, so a worker whose address
    /// drops connection attempts cost the OS's (minutes) on every attempt.
    /// A listener whose accept queue is full drops them as a blackholed
    /// host does.
    #[tokio::test]
    async fn a_connection_that_is_never_accepted_gives_up_at_the_connect_timeout() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        // Fill the accept queue; nothing is ever accepted.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await
            {
                fillers.push(stream);
            }
        }
        let upstream = Upstream::new(&ClientTls::default(), Duration::from_millis(300)).unwrap();
        let url = format!("http://{addr}/health");
        let send = upstream.send(Method::GET, &url, HeaderMap::new(), Bytes::new());
        let answer = tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .expect("the connect timeout ends the attempt, not the OS's");
        assert!(
            matches!(answer, Err(UpstreamError::Unreachable(_))),
            "{answer:?}"
        );
        drop((listener, fillers));
    }

    #[test]
    fn each_thread_keeps_its_own_pool() {
        let workers = tokio::runtime::Runtime::new().unwrap();
        let (url, accepted) = workers.block_on(counting_worker());
        let upstream =
            Arc::new(Upstream::new(&ClientTls::default(), Duration::from_secs(10)).unwrap());
        let (first_sent, second_may_start) = std::sync::mpsc::channel();
        let (second_sent, first_may_end) = tokio::sync::oneshot::channel::<()>();
        // The first thread's runtime keeps running (and its connection
        // usable) while the second sends.
        let first = on_a_serving_thread({
            let (upstream, url) = (upstream.clone(), url.clone());
            async move {
                two_requests(&upstream, &url).await;
                first_sent.send(()).unwrap();
                first_may_end.await.unwrap();
            }
        });
        second_may_start.recv().unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a thread reuses its connection"
        );
        on_a_serving_thread(async move { two_requests(&upstream, &url).await })
            .join()
            .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "another thread opens its own, though the first one's is idle"
        );
        second_sent.send(()).unwrap();
        first.join().unwrap();
    }
}
