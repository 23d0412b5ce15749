//! The body handling every inference request goes through: parse the body
//! as a JSON object and extract the routing text. Any input must give a
//! value or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_router::errors::ApiError;
use wasm_router::extract::peek;

fuzz_target!(|body: &[u8]| {
    match peek(body) {
        Ok(parsed) => match parsed.routing_text() {
            Ok(_) | Err(ApiError::BadRequest(_)) => {}
            Err(other) => panic!("routing_text failed with {other:?}, not a 400"),
        },
        Err(ApiError::BadRequest(_)) => {}
        Err(other) => panic!("peek failed with {other:?}, not a 400"),
    }
});
