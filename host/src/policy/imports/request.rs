//! The `request` and `candidates` resources: the getters of what a
//! `select` is lent ([`RequestData`], [`CandidatesData`]).

use wasmtime::component::Resource;

use super::{Host, saturating_micros};
use crate::policy::bindings::route_v2;
use crate::policy::bindings::v2::wasm_router::policy::types;
use crate::policy::lent::{CandidatesData, RequestData};

impl types::HostRequest for Host {
    fn id(&mut self, _: Resource<RequestData>) -> u64 {
        self.request.id
    }

    fn route(&mut self, _: Resource<RequestData>) -> types::Route {
        route_v2(self.request.route)
    }

    fn model(&mut self, _: Resource<RequestData>) -> String {
        self.request.model.clone()
    }

    fn text(&mut self, _: Resource<RequestData>) -> String {
        self.request.text.clone()
    }

    fn text_length(&mut self, _: Resource<RequestData>) -> u32 {
        u32::try_from(self.request.text.len()).unwrap_or(u32::MAX)
    }

    fn routing_key(&mut self, _: Resource<RequestData>) -> Option<String> {
        self.request.routing_key.clone()
    }

    fn stream(&mut self, _: Resource<RequestData>) -> bool {
        self.request.stream
    }

    fn text_prefix(&mut self, _: Resource<RequestData>, min_bytes: u32) -> String {
        let text = &self.request.text;
        let at = usize::try_from(min_bytes)
            .unwrap_or(usize::MAX)
            .min(text.len());
        text[..text.ceil_char_boundary(at)].to_string()
    }

    fn max_new_tokens(&mut self, _: Resource<RequestData>) -> Option<u32> {
        self.request.max_new_tokens
    }

    fn header(&mut self, _: Resource<RequestData>, name: String) -> Option<String> {
        if HIDDEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return None;
        }
        fn text(v: &axum::http::HeaderValue) -> Option<&str> {
            std::str::from_utf8(v.as_bytes()).ok()
        }
        let mut values = self.request.headers.get_all(name.as_str()).iter();
        let mut joined = text(values.next()?)?.to_string();
        for value in values {
            joined.push_str(", ");
            joined.push_str(text(value)?);
        }
        Some(joined)
    }

    fn drop(&mut self, _: Resource<RequestData>) -> wasmtime::Result<()> {
        // Lent, never owned by the guest: nothing to free.
        Ok(())
    }
}

/// Client headers a policy is never shown: credentials, which routing has
/// no use for and a policy's log lines or metrics could leak.
const HIDDEN_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

impl types::HostCandidates for Host {
    fn ids(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.id)
    }

    fn loads(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.load)
    }

    fn in_flight(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.in_flight)
    }

    fn reported_loads(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates.column(|c| c.reported_load)
    }

    fn queued(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates.column(|c| c.queued)
    }

    fn half_open(&mut self, _: Resource<CandidatesData>) -> Vec<bool> {
        self.candidates.column(|c| c.half_open)
    }

    fn ttft_ewma_us(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates
            .column(|c| c.ttft_ewma.map(saturating_micros))
    }

    fn latency_ewma_us(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates
            .column(|c| c.latency_ewma.map(saturating_micros))
    }

    fn kv_usage(&mut self, _: Resource<CandidatesData>) -> Vec<Option<f32>> {
        self.candidates.column(|c| {
            let capacity = c.kv_capacity.filter(|&n| n > 0)?;
            Some(c.kv_tokens? as f32 / capacity as f32)
        })
    }

    fn prefill_ahead(&mut self, _: Resource<CandidatesData>) -> Vec<types::PrefillWork> {
        self.candidates.column(|c| types::PrefillWork {
            requests: c.prefill_ahead.requests,
            tokens: c.prefill_ahead.tokens,
        })
    }

    fn weights(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        let known = &self.workers;
        self.candidates
            .column(|c| known.get(&c.id).map_or(1, |w| w.weight))
    }

    fn label(&mut self, _: Resource<CandidatesData>, key: String) -> Vec<Option<String>> {
        let known = &self.workers;
        self.candidates
            .column(|c| known.get(&c.id).and_then(|w| w.labels.get(&key)).cloned())
    }

    fn drop(&mut self, _: Resource<CandidatesData>) -> wasmtime::Result<()> {
        // Lent, never owned by the guest: nothing to free.
        Ok(())
    }
}
