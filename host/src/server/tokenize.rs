//! `/v1/tokenize` and `/v1/detokenize`, answered by the router with its own
//! tokenizer (`--tokenizer-path`), in sglang-router's gateway shapes: a
//! prompt (or a list of them) to `{"tokens", "count", "char_count"}` (lists
//! of those for a list), token ids (or lists of them) to `{"text"}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::proxy::ingress::{deadline, read_body};
use crate::state::AppState;
use crate::tokenizer::Tokenizer;

/// One item or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize)]
struct TokenizeRequest {
    prompt: OneOrMany<String>,
    #[serde(default = "yes")]
    add_special_tokens: bool,
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: OneOrMany<Vec<u32>>,
    #[serde(default = "yes")]
    skip_special_tokens: bool,
}

fn yes() -> bool {
    true
}

fn loaded(s: &AppState) -> Result<&Tokenizer, ApiError> {
    s.tokenizer.as_deref().ok_or_else(|| {
        ApiError::NotFound(
            "this router has no tokenizer: start it with --tokenizer-path FILE or --model-path DIR"
                .into(),
        )
    })
}

/// The request's JSON, read as the inference routes read theirs: within
/// `--max-payload-size` and the request's time.
async fn parse<T: serde::de::DeserializeOwned>(s: &AppState, req: Request) -> Result<T, ApiError> {
    let deadline = deadline(s);
    let body = read_body(s, req.into_body(), deadline).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub(super) async fn tokenize(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let tokenizer = loaded(&s)?;
    let request: TokenizeRequest = parse(&s, req).await?;
    let one = |text: &str| {
        tokenizer
            .encode(text, request.add_special_tokens)
            .map(|ids| (ids, text.chars().count()))
            .map_err(|e| ApiError::BadRequest(format!("cannot tokenize: {e}")))
    };
    Ok(Json(match &request.prompt {
        OneOrMany::One(text) => {
            let (ids, chars) = one(text)?;
            json!({"tokens": ids, "count": ids.len(), "char_count": chars})
        }
        OneOrMany::Many(texts) => {
            let all = texts
                .iter()
                .map(|t| one(t))
                .collect::<Result<Vec<_>, _>>()?;
            json!({
                "tokens": all.iter().map(|(ids, _)| ids).collect::<Vec<_>>(),
                "count": all.iter().map(|(ids, _)| ids.len()).collect::<Vec<_>>(),
                "char_count": all.iter().map(|(_, chars)| chars).collect::<Vec<_>>(),
            })
        }
    }))
}

pub(super) async fn detokenize(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let tokenizer = loaded(&s)?;
    let request: DetokenizeRequest = parse(&s, req).await?;
    let one = |ids: &[u32]| {
        tokenizer
            .decode(ids, request.skip_special_tokens)
            .map_err(|e| ApiError::BadRequest(format!("cannot detokenize: {e}")))
    };
    Ok(Json(match &request.tokens {
        OneOrMany::One(ids) => json!({"text": one(ids)?}),
        OneOrMany::Many(batch) => json!({
            "text": batch.iter().map(|ids| one(ids)).collect::<Result<Vec<_>, _>>()?
        }),
    }))
}
