//! What a contract-0.2 policy is lent for one `select`: the request and the
//! candidates (the `request` and `candidates` resources of
//! `wit/policy.wit`); their getters are in [`super::imports`].

use super::{Candidate, RouteRequest};

/// The request lent to `select`. One per instance, refilled for each call:
/// its buffers keep their capacity, so lending a request rarely allocates.
#[derive(Debug)]
pub struct RequestData {
    pub(super) id: u64,
    pub(super) route: crate::route::Route,
    pub(super) model: String,
    pub(super) text: String,
    /// `Some` when the router tokenized the text before the call.
    pub(super) tokens: Option<Vec<u32>>,
    /// The whole text's token count when `tokens` is its start only.
    pub(super) prompt_tokens: Option<u32>,
    pub(super) routing_key: Option<String>,
    /// The client's headers when they were lent; empty otherwise.
    pub(super) headers: axum::http::HeaderMap,
    pub(super) stream: bool,
    pub(super) max_new_tokens: Option<u32>,
    /// What `prefix-index.match-kv` found during the call: (worker, prompt
    /// tokens in its GPU cache) for each worker whose events it follows.
    pub(super) kv_cached: Vec<(u32, u32)>,
}

impl Default for RequestData {
    fn default() -> Self {
        RequestData {
            id: 0,
            route: crate::route::Route::Other,
            model: String::new(),
            text: String::new(),
            tokens: None,
            prompt_tokens: None,
            routing_key: None,
            headers: axum::http::HeaderMap::new(),
            stream: false,
            max_new_tokens: None,
            kv_cached: Vec::new(),
        }
    }
}

impl RequestData {
    pub(super) fn fill(&mut self, r: &RouteRequest<'_>) {
        self.id = r.id;
        self.route = r.route;
        self.model.clear();
        self.model.push_str(r.model);
        self.text.clear();
        self.text.push_str(r.text);
        match (r.tokens, &mut self.tokens) {
            (Some(tokens), Some(held)) => {
                held.clear();
                held.extend_from_slice(tokens);
            }
            (tokens, held) => *held = tokens.map(<[u32]>::to_vec),
        }
        match (r.routing_key, &mut self.routing_key) {
            (Some(key), Some(held)) => {
                held.clear();
                held.push_str(key);
            }
            (key, held) => *held = key.map(str::to_string),
        }
        match r.headers {
            Some(headers) => self.headers.clone_from(headers),
            None => self.headers.clear(),
        }
        self.stream = r.stream;
        self.max_new_tokens = r.max_new_tokens;
        self.prompt_tokens = r.prompt_tokens;
        self.kv_cached.clear();
    }
}

/// The candidates lent to `select`, kept as the seam gave them; each getter
/// makes its column. Refilled for each call, keeping its capacity.
#[derive(Debug, Default)]
pub struct CandidatesData {
    pub(super) list: Vec<Candidate>,
}

impl CandidatesData {
    pub(super) fn fill(&mut self, candidates: &[Candidate]) {
        self.list.clear();
        self.list.extend_from_slice(candidates);
    }

    /// One column: `f` of each candidate, in order.
    pub(super) fn column<T>(&self, f: impl Fn(&Candidate) -> T) -> Vec<T> {
        self.list.iter().map(f).collect()
    }
}
