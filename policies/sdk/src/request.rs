//! [`Request`]: what a policy reads of the request it routes.

use std::cell::OnceCell;

use crate::Route;
use crate::bindings::wasm_router::policy::types::Request as HostRequest;

/// The request being routed. Lent by the router for one `select`: each
/// getter asks the host once (the value is copied into the policy's memory
/// then) and keeps the answer for later calls.
///
/// In native unit tests, build one with [`Request::new`].
pub struct Request<'a> {
    from: From<'a>,
    text: OnceCell<String>,
    routing_key: OnceCell<Option<String>>,
}

enum From<'a> {
    Host(&'a HostRequest),
    Test(Test),
}

/// A request made by a test, without a host.
struct Test {
    text: String,
    routing_key: Option<String>,
    headers: Vec<(String, String)>,
}

impl<'a> Request<'a> {
    /// The request the router lent to this `select`. Used by the code that
    /// [`export_policy!`](crate::export_policy) expands to.
    #[doc(hidden)]
    pub fn lent(host: &'a HostRequest) -> Self {
        Request {
            from: From::Host(host),
            text: OnceCell::new(),
            routing_key: OnceCell::new(),
        }
    }

    /// The router's handle on the request, if it lent it (not for a request
    /// made by [`Request::new`]).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn lent_by_host(&self) -> Option<&'a HostRequest> {
        match &self.from {
            From::Host(h) => Some(h),
            From::Test(_) => None,
        }
    }

    /// Router-assigned sequence number; [`crate::Outcome::request_id`]
    /// matches it. 0 in tests.
    pub fn id(&self) -> u64 {
        match &self.from {
            From::Host(h) => h.id(),
            From::Test(_) => 0,
        }
    }

    /// The route it came in on (`Generate` in tests).
    pub fn route(&self) -> Route {
        match &self.from {
            From::Host(h) => h.route(),
            From::Test(_) => Route::Generate,
        }
    }

    /// The body's `model`; empty when absent (always, in tests).
    pub fn model(&self) -> String {
        match &self.from {
            From::Host(h) => h.model(),
            From::Test(_) => String::new(),
        }
    }

    /// The routing text: empty unless the policy declared `needs_text`.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| match &self.from {
            From::Host(h) => h.text(),
            From::Test(t) => t.text.clone(),
        })
    }

    /// The routing text's length in bytes, without copying it.
    pub fn text_len(&self) -> usize {
        match (&self.from, self.text.get()) {
            (_, Some(text)) => text.len(),
            (From::Host(h), None) => h.text_length() as usize,
            (From::Test(t), None) => t.text.len(),
        }
    }

    /// The routing text's start: its shortest prefix of at least
    /// `min_bytes` bytes that ends on a character boundary (all of it when
    /// shorter). Copies only that much, unless [`Request::text`] was read
    /// already.
    pub fn text_prefix(&self, min_bytes: usize) -> std::borrow::Cow<'_, str> {
        let cut = |text: &str| text.ceil_char_boundary(min_bytes.min(text.len()));
        match (&self.from, self.text.get()) {
            (_, Some(text)) => text[..cut(text)].into(),
            (From::Host(h), None) => h
                .text_prefix(u32::try_from(min_bytes).unwrap_or(u32::MAX))
                .into(),
            (From::Test(t), None) => t.text[..cut(&t.text)].into(),
        }
    }

    /// Header `x-routing-key` (or `x-smg-routing-key`).
    pub fn routing_key(&self) -> Option<&str> {
        self.routing_key
            .get_or_init(|| match &self.from {
                From::Host(h) => h.routing_key(),
                From::Test(t) => t.routing_key.clone(),
            })
            .as_deref()
    }

    /// Whether the client asked for a streamed answer (no, in tests).
    pub fn stream(&self) -> bool {
        match &self.from {
            From::Host(h) => h.stream(),
            From::Test(_) => false,
        }
    }

    /// The most tokens the client asked to be generated (none, in tests).
    pub fn max_new_tokens(&self) -> Option<u32> {
        match &self.from {
            From::Host(h) => h.max_new_tokens(),
            From::Test(_) => None,
        }
    }

    /// The client's header `name` (any case; several values joined with
    /// ", "); `None` when absent or not UTF-8, and always for
    /// `authorization`, `proxy-authorization` and `cookie`. Each call asks
    /// the router. A policy that calls this is lent the headers; one that
    /// does not costs the router nothing for them.
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.from {
            From::Host(h) => h.header(name),
            From::Test(t) => t
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
        }
    }
}

impl Request<'static> {
    /// A `/generate` request with this routing text and routing key, id 0
    /// and no model: what a policy's unit tests need.
    ///
    /// ```
    /// let req = wasm_router_policy::Request::new("hello", Some("user-7"));
    /// assert_eq!(req.routing_key(), Some("user-7"));
    /// assert_eq!(req.text(), "hello");
    /// ```
    pub fn new(text: &str, routing_key: Option<&str>) -> Self {
        Request {
            from: From::Test(Test {
                text: text.to_string(),
                routing_key: routing_key.map(str::to_string),
                headers: Vec::new(),
            }),
            text: OnceCell::new(),
            routing_key: OnceCell::new(),
        }
    }

    /// The same request with header `name: value`, for [`Request::header`].
    ///
    /// ```
    /// let req = wasm_router_policy::Request::new("héllo", None);
    /// // "é" is two bytes: a prefix of at least 2 bytes ends after it.
    /// assert_eq!(req.text_prefix(2), "hé");
    /// assert_eq!(req.text_prefix(99), "héllo");
    /// ```
    ///
    /// ```
    /// let req = wasm_router_policy::Request::new("hi", None).with_header("x-tenant", "acme");
    /// assert_eq!(req.header("X-Tenant").as_deref(), Some("acme"));
    /// assert_eq!(req.header("x-other"), None);
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let From::Test(t) = &mut self.from {
            t.headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}
