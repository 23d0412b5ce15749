//! The inference routes the router serves: what a policy is told a request
//! came in on, and the `route` label of the request metrics. A leaf module,
//! so that [`crate::policy`] and [`crate::metrics`] both use it without
//! importing each other.

/// The route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// SGLang's `/generate`.
    Generate,
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/embeddings`.
    Embeddings,
    /// Anything else routed to one worker.
    Other,
}

impl Route {
    /// The route's path, as the `route` label of metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Generate => "/generate",
            Route::Completions => "/v1/completions",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Other => "other",
        }
    }

    /// Its server span's name in traces: method and route, as
    /// OpenTelemetry's HTTP conventions name them.
    pub fn span_name(self) -> &'static str {
        match self {
            Route::Generate => "POST /generate",
            Route::Completions => "POST /v1/completions",
            Route::ChatCompletions => "POST /v1/chat/completions",
            Route::Embeddings => "POST /v1/embeddings",
            Route::Other => "POST",
        }
    }
}
