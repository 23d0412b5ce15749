//! The router's own tokenizer over HTTP (issue 16): `--tokenizer-path`
//! loads the repository's tokenizer.json with the Rust `tokenizers` crate,
//! and `/v1/tokenize` gives the ids the Python `tokenizers` library gives
//! for the same file.

use serde_json::json;

use crate::mock::{MockWorker, args, post_json, router};

const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/tokenizer/tokenizer.json"
);
const TEXT: &str = "Hello, world! The router routes requests to workers.";
/// `Tokenizer.from_file(TOKENIZER).encode(TEXT).ids` in Python's tokenizers
/// 0.22.1, the library that trained the file (assets/tokenizer/train.py).
const IDS: [u32; 15] = [
    41, 512, 312, 13, 276, 269, 441, 2, 646, 345, 541, 1020, 335, 509, 15,
];

#[tokio::test]
async fn tokenize_and_detokenize_with_the_loaded_tokenizer() {
    let worker = MockWorker::start("w1", "m").await;
    let r = router(wasm_router::config::RouterArgs {
        tokenizer_path: Some(TOKENIZER.into()),
        max_payload_size: Some(2 << 20),
        ..args(&[&worker])
    })
    .await;
    let (status, body) = post_json(&r, "/v1/tokenize", json!({"prompt": TEXT})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"tokens": IDS, "count": IDS.len(), "char_count": TEXT.len()})
    );
    let (status, body) = post_json(&r, "/v1/tokenize", json!({"prompt": [TEXT, "workers"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokens"][0], json!(IDS));
    assert_eq!(
        body["count"][1],
        body["tokens"][1].as_array().unwrap().len()
    );
    let (status, body) = post_json(&r, "/v1/detokenize", json!({"tokens": IDS})).await;
    assert_eq!((status, body), (200, json!({"text": TEXT})));
    let (status, body) = post_json(&r, "/v1/detokenize", json!({"tokens": [[99999999]]})).await;
    assert_eq!(
        status, 200,
        "an id out of the vocabulary decodes to nothing: {body}"
    );
    let (status, body) = post_json(&r, "/v1/tokenize", json!({"text": TEXT})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let huge = "x".repeat(3 << 20);
    let (status, body) = post_json(&r, "/v1/tokenize", json!({"prompt": huge})).await;
    assert_eq!(status, 413, "over --max-payload-size: {body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(worker.hits(), 0, "the router answers these itself");
}

#[tokio::test]
async fn without_a_tokenizer_the_routes_say_how_to_load_one() {
    let worker = MockWorker::start("w1", "m").await;
    let r = router(args(&[&worker])).await;
    let (status, body) = post_json(&r, "/v1/tokenize", json!({"prompt": TEXT})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tokenizer-path"),
        "{body}"
    );
}
