//! The HTTP client for the router's own calls to workers (health checks,
//! model and `dp_size` discovery, `/flush_cache`, the load monitor):
//! reqwest, pooled like [`crate::upstream`] (which forwards clients'
//! requests), no proxy from the environment, Nagle off, webpki roots only.

use crate::config::ClientTls;
use crate::upstream::{POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_WORKER};

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_WORKER)
}

/// The client, trusting the webpki roots.
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("the HTTP client builds with static settings")
}

/// The same client with `tls`'s extra roots and client certificate.
pub fn client_with_tls(tls: &ClientTls) -> anyhow::Result<reqwest::Client> {
    Ok(builder()
        .use_preconfigured_tls(tls.rustls_config()?)
        .build()?)
}
