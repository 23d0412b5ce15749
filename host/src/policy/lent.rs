//! The request a contract-0.2 policy is lent for one `select` (the
//! `request` resource of `wit/policy.wit`); its getters are in
//! [`super::imports`].

use super::RouteRequest;

/// The request lent to `select`. One per instance, refilled for each call:
/// its buffers keep their capacity, so lending a request rarely allocates.
#[derive(Debug)]
pub struct RequestData {
    pub(super) id: u64,
    pub(super) route: crate::route::Route,
    pub(super) model: String,
    pub(super) text: String,
    pub(super) routing_key: Option<String>,
    pub(super) stream: bool,
    pub(super) max_new_tokens: Option<u32>,
}

impl Default for RequestData {
    fn default() -> Self {
        RequestData {
            id: 0,
            route: crate::route::Route::Other,
            model: String::new(),
            text: String::new(),
            routing_key: None,
            stream: false,
            max_new_tokens: None,
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
        match (r.routing_key, &mut self.routing_key) {
            (Some(key), Some(held)) => {
                held.clear();
                held.push_str(key);
            }
            (key, held) => *held = key.map(str::to_string),
        }
        self.stream = r.stream;
        self.max_new_tokens = r.max_new_tokens;
    }
}
