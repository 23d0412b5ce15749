//! PD mode's `return_logprob`: the prefill's logprobs of the prompt put in
//! front of the decode's, in a JSON answer or in a stream's first event.

use futures_util::StreamExt;
use serde_json::Value;

use crate::upstream::Chunk;

/// The prompt's logprobs in a streamed prefill answer: the last
/// `meta_info.input_token_logprobs` in its `data:` events.
pub(super) fn streamed_input_logprobs(body: &[u8]) -> Option<Value> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
        .filter_map(|data| serde_json::from_slice::<Value>(data).ok())
        .filter_map(|event| event.pointer("/meta_info/input_token_logprobs").cloned())
        .next_back()
}

/// The longest first event held back to merge the logprobs into; past it,
/// the held bytes go on unmerged.
const MAX_FIRST_EVENT: usize = 1 << 20;

/// Where the first event in `held` ends (`\n\n` or `\r\n\r\n` follows it).
fn first_event_end(held: &[u8]) -> Option<usize> {
    let lf = held.windows(2).position(|w| w == b"\n\n");
    let crlf = held.windows(4).position(|w| w == b"\r\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The decode's stream with the prompt's logprobs (`front`) merged into its
/// first `data:` event; the rest passes through untouched. A first event
/// longer than [`MAX_FIRST_EVENT`] passes unmerged.
// Our own framing rather than an SSE parser crate (eventsource-stream):
// only the first event is rewritten, and a parser would re-encode them all.
pub(super) fn merge_first_event(
    body: impl futures_util::Stream<Item = Chunk> + Send + 'static,
    front: Option<Value>,
) -> impl futures_util::Stream<Item = Chunk> + Send + 'static {
    // (the stream, the logprobs until merged, bytes held until the first
    // event is whole, the stream's next item or end when held bytes went
    // out first)
    let state = (
        Box::pin(body.fuse()),
        front,
        Vec::<u8>::new(),
        None::<Option<Chunk>>,
    );
    futures_util::stream::unfold(
        state,
        |(mut body, mut front, mut held, queued)| async move {
            if let Some(item) = queued {
                return item.map(|chunk| (chunk, (body, None, held, None)));
            }
            loop {
                let next = body.next().await;
                let Some(logprobs) = front.take() else {
                    return next.map(|chunk| (chunk, (body, None, held, None)));
                };
                match next {
                    Some(Ok(chunk)) => {
                        held.extend_from_slice(&chunk);
                        let Some(end) = first_event_end(&held) else {
                            if held.len() > MAX_FIRST_EVENT {
                                tracing::warn!(
                                    "the decode stream's first event passed {MAX_FIRST_EVENT} bytes; the prompt logprobs are not merged"
                                );
                                let out = std::mem::take(&mut held);
                                return Some((Ok(out.into()), (body, None, held, None)));
                            }
                            front = Some(logprobs);
                            continue;
                        };
                        let mut out = merged_event(&held[..end], &logprobs);
                        out.extend_from_slice(&held[end..]);
                        return Some((Ok(out.into()), (body, None, Vec::new(), None)));
                    }
                    // Ended or broke before a whole event: what was held goes
                    // out first, then the end or the error.
                    other if held.is_empty() => {
                        return other.map(|chunk| (chunk, (body, None, held, None)));
                    }
                    other => {
                        let out = std::mem::take(&mut held);
                        return Some((Ok(out.into()), (body, None, held, Some(other))));
                    }
                }
            }
        },
    )
}

/// One SSE event with `front` merged in, if it is a JSON `data:` event.
fn merged_event(event: &[u8], front: &Value) -> Vec<u8> {
    let Some(mut data) = event
        .strip_prefix(b"data: ")
        .and_then(|d| serde_json::from_slice::<Value>(d).ok())
    else {
        return event.to_vec();
    };
    let prefill = serde_json::json!({"meta_info": {"input_token_logprobs": front}});
    merge_logprobs(&prefill, &mut data);
    format!("data: {data}").into_bytes()
}

/// Put the prefill's `meta_info.input_token_logprobs` in front of the
/// decode's (the prompt was read by the prefill worker); element by element
/// for a batch.
pub(super) fn merge_logprobs(prefill: &Value, decode: &mut Value) {
    if let (Value::Array(prefill), Value::Array(decode)) = (prefill, &mut *decode) {
        for (p, d) in prefill.iter().zip(decode) {
            merge_logprobs(p, d);
        }
        return;
    }
    let Some(Value::Array(front)) = prefill.pointer("/meta_info/input_token_logprobs") else {
        return;
    };
    let Some(meta) = decode.get_mut("meta_info").and_then(Value::as_object_mut) else {
        return;
    };
    let mut all = front.clone();
    if let Some(Value::Array(back)) = meta.remove("input_token_logprobs") {
        all.extend(back);
    }
    meta.insert("input_token_logprobs".into(), Value::Array(all));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn collect(chunks: &[&'static str], front: Option<Value>) -> String {
        let body = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(bytes::Bytes::from_static(c.as_bytes())))
                .collect::<Vec<Chunk>>(),
        );
        let out: Vec<_> = merge_first_event(body, front).collect().await;
        out.into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_streams_first_event_gets_the_prompt_logprobs_even_split_across_chunks() {
        let front = Some(json!([[-1.0, 1, null]]));
        let merged = collect(
            &[
                "data: {\"meta_info\": {\"input_tok",
                "en_logprobs\": []}}\n",
                "\ndata: {\"x\": 2}\n\n",
                "data: [DONE]\n\n",
            ],
            front.clone(),
        )
        .await;
        let events: Vec<&str> = merged.split("\n\n").collect();
        let first: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            first["meta_info"]["input_token_logprobs"],
            json!([[-1.0, 1, null]])
        );
        assert_eq!(&events[1..], ["data: {\"x\": 2}", "data: [DONE]", ""]);
        // Without logprobs, or when the stream ends mid-event, bytes pass as they are.
        assert_eq!(
            collect(&["data: 1\n\n", "data: 2"], None).await,
            "data: 1\n\ndata: 2"
        );
        assert_eq!(
            collect(&["data: {\"a\"", ": 1}"], front).await,
            "data: {\"a\": 1}"
        );
    }

    /// Issue 15: the first event was only found at `\n\n`, so a CRLF
    /// stream was held whole, without bound.
    #[tokio::test]
    async fn a_crlf_first_event_is_merged_and_a_huge_one_passes_unmerged() {
        let front = Some(json!([[-1.0, 1, null]]));
        let merged = collect(
            &["data: {\"meta_info\": {}}\r\n\r\n", "data: [DONE]\r\n\r\n"],
            front.clone(),
        )
        .await;
        assert!(
            merged.starts_with(
                "data: {\"meta_info\":{\"input_token_logprobs\":[[-1.0,1,null]]}}\r\n\r\n"
            ),
            "{merged}"
        );
        let huge: &'static str = Box::leak("x".repeat(MAX_FIRST_EVENT + 1).into_boxed_str());
        let passed = collect(&["data: ", huge, "\n\n"], front).await;
        assert_eq!(passed, format!("data: {huge}\n\n"), "passed unmerged");
    }

    #[test]
    fn the_prompt_logprobs_are_found_in_a_streamed_prefill_answer() {
        let body = b"data: {\"meta_info\": {\"input_token_logprobs\": [[-1, 1, null]]}}\n\ndata: {\"meta_info\": {}}\n\ndata: [DONE]\n\n";
        assert_eq!(streamed_input_logprobs(body), Some(json!([[-1, 1, null]])));
        assert_eq!(streamed_input_logprobs(b"data: [DONE]\n\n"), None);
    }

    #[test]
    fn logprobs_of_the_prompt_come_first_also_per_batch_item() {
        let prefill =
            json!({"meta_info": {"input_token_logprobs": [[-1.0, 1, null], [-2.0, 2, null]]}});
        let mut decode =
            json!({"text": "x", "meta_info": {"input_token_logprobs": [[-3.0, 3, null]]}});
        merge_logprobs(&prefill, &mut decode);
        assert_eq!(
            decode["meta_info"]["input_token_logprobs"],
            json!([[-1.0, 1, null], [-2.0, 2, null], [-3.0, 3, null]])
        );
        assert_eq!(decode["text"], "x");
        let prefill =
            json!([{"meta_info": {"input_token_logprobs": [[-1.0, 1, null]]}}, {"meta_info": {}}]);
        let mut decode = json!([{"meta_info": {}}, {"meta_info": {"input_token_logprobs": []}}]);
        merge_logprobs(&prefill, &mut decode);
        assert_eq!(
            decode[0]["meta_info"]["input_token_logprobs"],
            json!([[-1.0, 1, null]])
        );
        assert_eq!(decode[1]["meta_info"]["input_token_logprobs"], json!([]));
    }
}
