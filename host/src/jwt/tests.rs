//! Tokens signed here, verified against a JWKS served on loopback: each way
//! a token must be refused, the role mapping, key rotation and discovery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "wasm-router";
/// A 2048-bit RSA key made for these tests only (`openssl genrsa`).
const RSA_KEY: &[u8] = include_bytes!("test-rsa-key.pem");
/// base64url of `{"alg":"none","typ":"JWT"}`.
const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// A signing key and its public JWK, named `kid`.
struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
    kid: String,
}

fn ec_signer(kid: &str) -> (Signer, String) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    (signer(Algorithm::ES256, key, kid), pair.public_key_pem())
}

fn rsa_signer(kid: &str) -> Signer {
    signer(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
        kid,
    )
}

fn signer(alg: Algorithm, key: EncodingKey, kid: &str) -> Signer {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    Signer {
        alg,
        key,
        jwk,
        kid: kid.into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for ten minutes, from the issuer for the audience.
fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "ops@example.com", "exp": now() + 600, "roles": ["admin"]})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(signer.alg);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

/// An identity provider on loopback: its discovery document and its keys,
/// which a test may change, and how often the keys were fetched (also the
/// state its routes serve from).
#[derive(Clone)]
struct Issuer {
    base: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn issuer(keys: Vec<Value>) -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = Issuer {
        base,
        keys: Arc::new(Mutex::new(keys)),
        fetches: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(s): State<Issuer>| async move {
                Json(json!({"issuer": ISSUER, "jwks_uri": format!("{}/keys", s.base)}))
            }),
        )
        .route(
            "/keys",
            get(|State(s): State<Issuer>| async move {
                s.fetches.fetch_add(1, Ordering::SeqCst);
                Json(json!({"keys": *s.keys.lock().unwrap()}))
            }),
        )
        .with_state(served.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    served
}

/// Settings for tokens from [`ISSUER`] for [`AUDIENCE`], keys at `jwks_uri`.
fn config(jwks_uri: Option<String>) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_uri,
        role_mapping: Vec::new(),
    }
}

/// A verifier of the loopback issuer's keys, with this role mapping.
fn verifier(issuer: &Issuer, role_mapping: &[(&str, bool)]) -> Verifier {
    let role_mapping = role_mapping
        .iter()
        .map(|(from, admin)| ((*from).to_owned(), *admin))
        .collect();
    let jwks_uri = Some(format!("{}/keys", issuer.base));
    Verifier::new(
        JwtConfig {
            role_mapping,
            ..config(jwks_uri)
        },
        crate::client::client(),
    )
}

#[tokio::test]
async fn a_valid_token_names_its_subject_and_role() {
    let (ec, _) = ec_signer("ec-1");
    let rsa = rsa_signer("rsa-1");
    let idp = issuer(vec![ec.jwk.clone(), rsa.jwk.clone()]).await;
    let v = verifier(&idp, &[]);
    v.refresh().await.unwrap();
    let mut c = claims();
    c["sub"] = json!("mallory\n2026-12-02 INFO control_plane_audit principal=root");
    let principal = v.verify(&sign(&ec, &c)).await.unwrap();
    assert_eq!(
        principal.subject, "mallory2026-12-02 INFO control_plane_audit principal=root",
        "one audit line stays one line"
    );
    for signer in [&ec, &rsa] {
        let principal = v.verify(&sign(signer, &claims())).await.unwrap();
        assert_eq!(
            principal,
            Verified {
                subject: "ops@example.com".into(),
                admin: true
            }
        );
    }
}

/// Every refusal the issue lists, each for its own reason.
#[tokio::test]
async fn tokens_are_refused_for_each_reason() {
    let (ec, public_pem) = ec_signer("ec-1");
    let idp = issuer(vec![ec.jwk.clone()]).await;
    let v = verifier(&idp, &[]);
    v.refresh().await.unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        sign(&ec, &c)
    };
    let invalid = |why: &str| Err(TokenError::Invalid(why.into()));
    let cases = [
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 3600)),
            invalid("the token has expired"),
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 3600)),
            invalid("the token is not valid yet (nbf)"),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("another-service")),
            invalid("the token is for another audience"),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://elsewhere.test")),
            invalid("the token is from another issuer"),
        ),
        (
            "no expiry",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            invalid("the token has no exp claim"),
        ),
        (
            "signed by another key under a known id",
            sign(&ec_signer("ec-1").0, &claims()),
            invalid("the signature does not verify"),
        ),
    ];
    for (case, token, expected) in cases {
        assert_eq!(v.verify(&token).await.map(|p| p.admin), expected, "{case}");
    }

    // A key the issuer publishes for encryption signs nothing.
    let (enc, _) = ec_signer("enc-1");
    let mut enc_jwk = enc.jwk.clone();
    enc_jwk["use"] = json!("enc");
    idp.keys.lock().unwrap().push(enc_jwk);
    v.refresh().await.unwrap();
    assert_eq!(
        v.verify(&sign(&enc, &claims())).await.map(|p| p.admin),
        invalid("the key it names is the issuer's encryption key, not a signing key"),
        "an encryption key"
    );

    // `alg: none`, with a valid token's claims and no signature.
    let valid = sign(&ec, &claims());
    let payload = valid.split('.').nth(1).unwrap();
    let none = format!("{NONE_HEADER}.{payload}.");
    assert!(
        matches!(v.verify(&none).await, Err(TokenError::Malformed(_))),
        "alg none"
    );

    // HS256 keyed with the issuer's public key, the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ec-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v.verify(&confused).await,
        Err(TokenError::Algorithm("HS256".into()))
    );
}

/// An unknown key id fetches the keys again, at most once per
/// `REFETCH_AT_MOST`: made-up ids cannot hammer the issuer.
#[tokio::test]
async fn unknown_key_ids_refetch_at_most_once_per_period() {
    let (ec, _) = ec_signer("ec-1");
    let idp = issuer(vec![ec.jwk.clone()]).await;
    let v = verifier(&idp, &[]);
    v.refresh().await.unwrap();
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        let (stranger, _) = ec_signer(kid);
        assert_eq!(
            v.verify(&sign(&stranger, &claims())).await,
            Err(TokenError::UnknownKey(kid.into()))
        );
    }
    // The fetch at start was under REFETCH_AT_MOST ago: none more.
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
}

/// The issuer rotates in a new key: a token signed with it is accepted,
/// the keys fetched again when it is first seen.
#[tokio::test]
async fn a_rotated_in_key_is_fetched_when_first_seen() {
    let (old, _) = ec_signer("old");
    let idp = issuer(vec![old.jwk.clone()]).await;
    let v = verifier(&idp, &[]);
    // No fetch at start: the first token's unknown id fetches.
    let (new, _) = ec_signer("new");
    idp.keys.lock().unwrap().push(new.jwk.clone());
    assert_eq!(
        v.verify(&sign(&new, &claims())).await.map(|p| p.admin),
        Ok(true)
    );
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(
        v.verify(&sign(&old, &claims())).await.map(|p| p.admin),
        Ok(true)
    );
}

#[tokio::test]
async fn roles_map_and_default_to_user() {
    let (ec, _) = ec_signer("ec-1");
    let idp = issuer(vec![ec.jwk.clone()]).await;
    let v = verifier(&idp, &[("Gateway.Admin", true), ("admin", false)]);
    v.refresh().await.unwrap();
    let cases = [
        (json!({"roles": ["Gateway.Admin"]}), true),
        (json!({"groups": "Gateway.Admin"}), true),
        // Mapped to user, so not the admin it spells.
        (json!({"roles": ["admin"]}), false),
        (json!({"role": "reader"}), false),
        (json!({}), false),
    ];
    for (roles, expected) in cases {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("roles");
        c.as_object_mut()
            .unwrap()
            .extend(roles.as_object().unwrap().clone());
        assert_eq!(
            v.verify(&sign(&ec, &c)).await.map(|p| p.admin),
            Ok(expected),
            "{roles}"
        );
    }
}

/// Without `--jwt-jwks-uri`, the issuer's discovery document names the keys.
#[tokio::test]
async fn keys_are_discovered_from_the_issuer() {
    let (ec, _) = ec_signer("ec-1");
    let idp = issuer(vec![ec.jwk.clone()]).await;
    let issuer = format!("{}/", idp.base);
    let v = Verifier::new(
        JwtConfig {
            issuer,
            ..config(None)
        },
        crate::client::client(),
    );
    v.refresh().await.unwrap();
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
    let mut c = claims();
    c["iss"] = json!(format!("{}/", idp.base));
    assert_eq!(v.verify(&sign(&ec, &c)).await.map(|p| p.admin), Ok(true));
}

/// An issuer that cannot be reached: the client is told the keys are not
/// available, not that its token is bad.
#[tokio::test]
async fn an_unreachable_issuer_says_so() {
    let (ec, _) = ec_signer("ec-1");
    let idp = issuer(Vec::new()).await;
    let nowhere = Some(format!("{}/nowhere", idp.base));
    let v = Verifier::new(config(nowhere), crate::client::client());
    assert!(v.refresh().await.is_err());
    assert!(matches!(
        v.verify(&sign(&ec, &claims())).await,
        Err(TokenError::NoKeys(_))
    ));
}
