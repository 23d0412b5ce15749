//! OIDC bearer tokens at the admin boundary, over HTTP (issue 16): the
//! router fetches the issuer's keys from a JWKS served on loopback and
//! answers the admin routes by the token's role; API keys keep working
//! beside them, and the inference routes are not the control plane's.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::mock::{MockWorker, args, http, router};

const ISSUER: &str = "https://idp.test/realms/inference";
const AUDIENCE: &str = "wasm-router";

#[tokio::test]
async fn admin_routes_answer_by_the_tokens_role() {
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks = format!("http://{}/keys", listener.local_addr().unwrap());
    let keys = json!({"keys": [jwk]});
    let app = axum::Router::new().route("/keys", get(move || async move { Json(keys) }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let worker = MockWorker::start("w1", "m").await;
    let r = router(wasm_router::config::RouterArgs {
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        jwt_jwks_uri: Some(jwks),
        jwt_role_mapping: vec!["Gateway.Admin=admin".into(), "Gateway.User=user".into()],
        control_plane_api_keys: vec!["ci:CI pipeline:admin:sk-ci".into()],
        ..args(&[&worker])
    })
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |role: &str, exp: u64| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let claims =
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": exp, "roles": [role]});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let workers = async |bearer: Option<&str>| {
        let mut req = http().get(format!("http://{}/workers", r.addr));
        if let Some(bearer) = bearer {
            req = req.bearer_auth(bearer);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap())
    };

    let (status, body) = workers(Some(&token("Gateway.Admin", now + 600))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    let (status, body) = workers(Some(&token("Gateway.User", now + 600))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    let (status, body) = workers(Some(&token("Gateway.Admin", now - 600))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    // A loopback client no longer passes keyless once tokens are required.
    assert_eq!(workers(None).await.0, 401);
    assert_eq!(
        workers(Some("sk-ci")).await.0,
        200,
        "API keys beside tokens"
    );
    // The inference routes are not the control plane's.
    let (status, _) = crate::mock::post_json(&r, "/generate", json!({"text": "hi"})).await;
    assert_eq!(status, 200);
}
