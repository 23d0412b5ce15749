//! What the router reads of a request body: the `model` (always, to pick the
//! worker pool), the routing text (only for policies that asked), and in PD
//! mode whether it streams, wants logprobs, or is a batch. The body is
//! scanned once without building a typed model of the request; nested
//! values the router does not need are skipped as raw JSON.
//!
//! The router forwards the client's bytes unchanged, except for the fields
//! it must add ([`with_fields`]: PD bootstrap, `data_parallel_rank`).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::errors::ApiError;

/// The parts of a request body the router looks at, borrowed from it.
#[derive(Debug, Default, Deserialize)]
pub struct Peek<'a> {
    /// The requested model.
    #[serde(default, borrow)]
    pub model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input_ids: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stream: Option<&'a RawValue>,
    #[serde(default, borrow)]
    return_logprob: Option<&'a RawValue>,
    #[serde(default, borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(default, borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(default, borrow)]
    sampling_params: Option<&'a RawValue>,
}

/// `sampling_params` of `/generate`, as far as the router reads it.
#[derive(Deserialize)]
struct SamplingParams<'a> {
    #[serde(default, borrow)]
    max_new_tokens: Option<&'a RawValue>,
}

/// A raw JSON value as a token count, if it is one.
fn count(raw: Option<&RawValue>) -> Option<u32> {
    raw.and_then(|r| r.get().parse().ok())
}

/// Parse the body: it must be one JSON object.
pub fn peek(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    // serde would also read a struct from a JSON array: only objects pass.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("not a JSON object: {e}")))
}

impl Peek<'_> {
    /// Whether the client asked for a stream (`"stream": true`).
    pub fn streams(&self) -> bool {
        self.stream.is_some_and(|raw| raw.get() == "true")
    }

    /// The most tokens the client asked to be generated: `max_tokens`,
    /// `max_completion_tokens` or `sampling_params.max_new_tokens`, the first
    /// given as a whole number. Anything else is the worker's to judge.
    pub fn max_new_tokens(&self) -> Option<u32> {
        count(self.max_tokens)
            .or_else(|| count(self.max_completion_tokens))
            .or_else(|| {
                let params: SamplingParams<'_> =
                    serde_json::from_str(self.sampling_params?.get()).ok()?;
                count(params.max_new_tokens)
            })
    }

    /// Whether the client asked for logprobs (`"return_logprob": true`).
    pub fn wants_logprobs(&self) -> bool {
        self.return_logprob.is_some_and(|raw| raw.get() == "true")
    }

    /// The number of prompts when the body is a batch: `text` as an array of
    /// strings, `input_ids` as an array of arrays, `prompt` as an array of
    /// strings or of arrays. `None` for a single prompt.
    pub fn batch_size(&self) -> Option<usize> {
        if let Some(raw) = self.text {
            return items(raw).map(|v| v.len());
        }
        let nested = self.input_ids.or(self.prompt)?;
        let items = items(nested)?;
        match items.first() {
            Some(first) if first.get().starts_with(['"', '[']) => Some(items.len()),
            _ => None,
        }
    }

    /// The routing text: `text` (or `input_ids`) for `/generate`, `prompt`
    /// for completions, every message's content in order for chat. Strings in
    /// a batch are joined by newlines; token ids by spaces.
    pub fn routing_text(&self) -> Result<String, ApiError> {
        let field = self.text.or(self.prompt).or(self.input_ids);
        if let Some(raw) = field {
            return flatten(raw);
        }
        if let Some(raw) = self.messages {
            return chat_text(raw);
        }
        Ok(String::new())
    }
}

/// A string, an array of strings, or token ids (possibly nested by batch).
fn flatten(raw: &RawValue) -> Result<String, ApiError> {
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::BadRequest(format!("unreadable prompt: {e}")))?;
    let mut out = String::new();
    push_text(&value, &mut out);
    Ok(out)
}

fn push_text(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value::*;
    match value {
        String(s) => out.push_str(s),
        Number(n) => {
            out.push_str(&n.to_string());
            out.push(' ');
        }
        Array(items) => {
            for item in items {
                push_text(item, out);
                if item.is_string() || item.is_array() {
                    out.push('\n');
                }
            }
        }
        Null | Bool(_) | Object(_) => {}
    }
}

/// The items of a JSON array, unparsed; `None` if it is not an array.
fn items(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

/// Every message's content, in order: a string, or the `text` of each part.
fn chat_text(raw: &RawValue) -> Result<String, ApiError> {
    let messages: Vec<Message<'_>> = serde_json::from_str(raw.get()).map_err(|e| {
        ApiError::BadRequest(format!("`messages` must be an array of objects: {e}"))
    })?;
    let mut out = String::new();
    for content in messages.iter().filter_map(|m| m.content) {
        if let Ok(s) = serde_json::from_str::<String>(content.get()) {
            out.push_str(&s);
        } else if let Ok(parts) = serde_json::from_str::<Vec<Part>>(content.get()) {
            parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .for_each(|t| out.push_str(t));
        }
        out.push('\n');
    }
    Ok(out)
}

/// `body` (a JSON object, as [`peek`] checked) with `fields` (`"k":v`
/// pairs, comma-separated) added before its closing brace. Fields the
/// client also sent appear twice; JSON readers keep the last, the router's.
pub fn with_fields(body: &[u8], fields: &str) -> bytes::Bytes {
    let end = body
        .iter()
        .rposition(|&b| b == b'}')
        .expect("peek admits only JSON objects");
    let start = body
        .iter()
        .position(|&b| b == b'{')
        .expect("peek admits only JSON objects");
    let empty = body[start + 1..end].iter().all(u8::is_ascii_whitespace);
    let mut out = Vec::with_capacity(body.len() + fields.len() + 1);
    out.extend_from_slice(&body[..end]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(&body[end..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> String {
        peek(body.as_bytes()).unwrap().routing_text().unwrap()
    }

    #[test]
    fn each_route_shape_gives_its_text() {
        assert_eq!(text(r#"{"text": "hello"}"#), "hello");
        assert_eq!(text(r#"{"input_ids": [1, 2, 3]}"#), "1 2 3 ");
        assert_eq!(text(r#"{"prompt": ["a", "b"]}"#), "a\nb\n");
        assert_eq!(
            text(
                r#"{"model": "m", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}]}"#
            ),
            "sys\nhi\n"
        );
        assert_eq!(text(r#"{"model": "m"}"#), "");
        assert_eq!(text(r#"{"text": "ünïcödé 🚀"}"#), "ünïcödé 🚀");
    }

    #[test]
    fn batches_stream_and_logprobs_are_read() {
        let batch = |body: &str| peek(body.as_bytes()).unwrap().batch_size();
        assert_eq!(batch(r#"{"text": "one"}"#), None);
        assert_eq!(batch(r#"{"text": ["a", "b", "c"]}"#), Some(3));
        assert_eq!(batch(r#"{"input_ids": [1, 2, 3]}"#), None);
        assert_eq!(batch(r#"{"input_ids": [[1, 2], [3]]}"#), Some(2));
        assert_eq!(batch(r#"{"prompt": [[1, 2], [3]]}"#), Some(2));
        assert_eq!(batch(r#"{"prompt": ["x", "y"]}"#), Some(2));
        assert_eq!(batch(r#"{"prompt": "x"}"#), None);
        assert_eq!(batch(r#"{"messages": [{"content": "x"}]}"#), None);
        let p = peek(br#"{"stream": true, "return_logprob": true}"#).unwrap();
        assert!(p.streams() && p.wants_logprobs());
        let p = peek(br#"{"stream": "true", "return_logprob": false}"#).unwrap();
        assert!(!p.streams() && !p.wants_logprobs());
    }

    #[test]
    fn fields_are_added_and_the_rest_kept_byte_for_byte() {
        let added = with_fields(b"{\"text\": \"a}\" } \n", "\"k\":1");
        assert_eq!(&added[..], b"{\"text\": \"a}\" ,\"k\":1} \n");
        let v: serde_json::Value = serde_json::from_slice(&added).unwrap();
        assert_eq!(v["k"], 1);
        assert_eq!(v["text"], "a}");
        assert_eq!(&with_fields(b" { } ", "\"k\":1")[..], b" { \"k\":1} ");
    }

    #[test]
    fn model_is_read_without_the_rest() {
        let p = peek(br#"{"model": "llama", "extra": {"deep": [1, {"x": null}]}}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("llama"));
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [
            "",
            "{",
            "[1, 2]",
            "\"text\"",
            "{\"text\": }",
            "{\"messages\": 3}",
        ] {
            let result = peek(body.as_bytes()).and_then(|p| p.routing_text());
            assert!(
                matches!(result, Err(ApiError::BadRequest(_))),
                "{body:?}: {result:?}"
            );
        }
    }
}
