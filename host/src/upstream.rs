//! The client that forwards clients' requests to workers: hyper's pooled
//! HTTP/1.1 client over rustls, and nothing else on the way. Forwarding is
//! most of what the router does per request, and reqwest's layers (URL
//! parsing, redirect policy, boxed bodies and futures) cost about a third
//! of the proxy's CPU time per request (BENCHMARKS.md). The router's own
//! calls to workers (health checks, model discovery, `/flush_cache`, the
//! load monitor) go through reqwest, which is more convenient there.

use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::{ClientTls, TlsError};

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

/// Pooled HTTP/1.1 connections to workers, plain or TLS (extra roots and a
/// client certificate from [`ClientTls`]). Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Upstream {
    /// A client trusting the webpki roots plus `tls`'s, presenting `tls`'s
    /// client certificate if set.
    pub fn new(tls: &ClientTls) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls.rustls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Upstream { client })
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
        match self.client.request(request).await {
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

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, hyper::Error> {
        Ok(self.0.into_body().collect().await?.to_bytes())
    }

    /// The body, piece by piece as it arrives.
    pub fn bytes_stream(self) -> BodyDataStream<Incoming> {
        BodyDataStream::new(self.0.into_body())
    }

    /// The body as it arrives, for passing on.
    pub fn into_body(self) -> Incoming {
        self.0.into_body()
    }
}
