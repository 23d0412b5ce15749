//! What the router reads of a request body: the `model` (always, to pick the
//! worker pool) and the routing text (only for policies that asked). The body
//! is scanned once without building a typed model of the request; nested
//! values the router does not need are skipped as raw JSON.

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
