//! OIDC bearer tokens for the control plane (`--jwt-issuer`,
//! `--jwt-audience`, `--jwt-jwks-uri`, `--jwt-role-mapping`), as
//! sglang-router takes them: a token signed by one of the issuer's keys
//! (RS256/384/512, ES256/384), for the audience, within its validity, is
//! admitted with the role its claims map to.
//!
//! The keys come from the JWKS URL, or from the issuer's OIDC discovery
//! document (`{issuer}/.well-known/openid-configuration`) when none is given;
//! they are fetched at start, again every [`REFRESH_EVERY`], and at once (at
//! most every [`REFETCH_AT_MOST`]) when a token names a key id not yet known,
//! which is how an issuer's key rotation reaches the router. A fetch that
//! fails keeps the keys held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::JwtConfig;

/// How often the keys are fetched again without being asked.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The shortest time between two fetches asked for by unknown key ids: an
/// attacker's made-up ids cannot turn the router into a load on the issuer.
pub const REFETCH_AT_MOST: Duration = Duration::from_secs(10);
/// The largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1 << 20;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Signature algorithms accepted: the issuer's public keys only; a token
/// signed with a shared secret (HS*) or none is refused whatever its key id.
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// Claims a role is read from, in order.
const ROLE_CLAIMS: [&str; 4] = ["roles", "role", "groups", "group"];
/// The longest principal kept for the audit log.
const MAX_PRINCIPAL: usize = 128;

/// Why a token was refused (told to the client: none of it is secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or one whose header does not parse (`alg: none`
    /// included).
    #[error("not a valid JWT: {0}")]
    Malformed(String),
    /// Signed with an algorithm the router does not accept.
    #[error("algorithm {0} is not accepted: sign with RS256, RS384, RS512, ES256 or ES384")]
    Algorithm(String),
    /// No key of the issuer has that id (after fetching the keys again).
    #[error("no key of the issuer has id {0:?}")]
    UnknownKey(String),
    /// The token names no key and the issuer has several.
    #[error("the token names no key id (kid) and the issuer has {0} keys")]
    NoKeyId(usize),
    /// The issuer's keys could not be fetched yet.
    #[error("the issuer's keys are not available yet: {0}")]
    NoKeys(String),
    /// The signature, or a claim, does not hold.
    #[error("{0}")]
    Invalid(String),
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its subject (else its email), for the audit log.
    pub subject: String,
    /// Whether a role in it maps to admin.
    pub admin: bool,
}

/// Verifies bearer tokens against the issuer's keys.
pub struct Verifier {
    config: JwtConfig,
    client: reqwest::Client,
    keys: ArcSwap<JwkSet>,
    /// When keys were last fetched, and why the last fetch failed (held
    /// while fetching, so that one fetch runs at a time).
    fetched: tokio::sync::Mutex<Fetched>,
}

#[derive(Default)]
struct Fetched {
    at: Option<Instant>,
    error: Option<String>,
}

impl Verifier {
    /// A verifier with no keys yet: [`Verifier::refresh`] fetches them.
    pub fn new(config: JwtConfig, client: reqwest::Client) -> Self {
        Verifier {
            config,
            client,
            keys: ArcSwap::from_pointee(JwkSet { keys: Vec::new() }),
            fetched: tokio::sync::Mutex::new(Fetched::default()),
        }
    }

    /// Fetch the keys now; on failure keep those held and say why.
    pub async fn refresh(&self) -> Result<(), String> {
        let mut fetched = self.fetched.lock().await;
        self.fetch_into(&mut fetched).await
    }

    async fn fetch_into(&self, fetched: &mut Fetched) -> Result<(), String> {
        fetched.at = Some(Instant::now());
        let result = self.fetch().await;
        match &result {
            Ok(set) => {
                tracing::debug!(keys = set.keys.len(), "fetched the issuer's keys");
                self.keys.store(Arc::new(set.clone()));
                fetched.error = None;
            }
            Err(e) => {
                tracing::warn!("cannot fetch the JWT issuer's keys, keeping those held: {e}");
                fetched.error = Some(e.clone());
            }
        }
        result.map(|_| ())
    }

    /// Fetch again unless a fetch ran within [`REFETCH_AT_MOST`].
    async fn refetch(&self) -> Option<String> {
        let mut fetched = self.fetched.lock().await;
        if fetched.at.is_none_or(|at| at.elapsed() >= REFETCH_AT_MOST) {
            // The outcome is in `fetched.error`, read below.
            self.fetch_into(&mut fetched).await.ok();
        }
        fetched.error.clone()
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let uri = match &self.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let document: Value = self.get_json(&discovery).await?;
                document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{discovery} names no jwks_uri: set --jwt-jwks-uri"))?
                    .to_owned()
            }
        };
        let set: JwkSet = self.get_json(&uri).await?;
        Ok(set)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT as u64)
        {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_DOCUMENT {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
    }

    /// Verify `token` and say who it is: its subject, with the role its
    /// claims map to.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let alg = header.alg;
        if !ALGORITHMS.contains(&alg) {
            return Err(TokenError::Algorithm(format!("{alg:?}")));
        }
        let kid = header.kid.as_deref();
        let key = match self.key(kid)? {
            Some(jwk) => jwk,
            None => {
                let failed = self.refetch().await;
                match (self.key(kid)?, failed) {
                    (Some(jwk), _) => jwk,
                    (None, Some(e)) if self.keys.load().keys.is_empty() => {
                        return Err(TokenError::NoKeys(e));
                    }
                    (None, _) => {
                        return Err(TokenError::UnknownKey(kid.unwrap_or_default().to_owned()));
                    }
                }
            }
        };
        if key.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err(TokenError::Invalid(
                "the key it names is the issuer's encryption key, not a signing key".into(),
            ));
        }
        if let Some(declared) = key.common.key_algorithm
            && Algorithm::try_from(declared).ok() != Some(alg)
        {
            return Err(TokenError::Algorithm(format!(
                "{alg:?} (the key is for {declared})"
            )));
        }
        let decoding = DecodingKey::from_jwk(&key)
            .map_err(|e| TokenError::Invalid(format!("the issuer's key is unusable: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation)
            .map_err(|e| TokenError::Invalid(refusal(&e)))?
            .claims;
        Ok(Verified {
            subject: subject(&claims),
            admin: self.is_admin(&claims),
        })
    }

    /// The key a token names; with no key id, the issuer's only key.
    fn key(&self, kid: Option<&str>) -> Result<Option<Jwk>, TokenError> {
        let keys = self.keys.load();
        match kid {
            Some(kid) => Ok(keys.find(kid).cloned()),
            None if keys.keys.len() <= 1 => Ok(keys.keys.first().cloned()),
            None => Err(TokenError::NoKeyId(keys.keys.len())),
        }
    }

    /// Does a role in the claims map to admin? Each value of the role
    /// claims maps by `--jwt-role-mapping`; one not mapped stands for itself.
    fn is_admin(&self, claims: &Map<String, Value>) -> bool {
        let values = ROLE_CLAIMS
            .iter()
            .filter_map(|name| claims.get(*name))
            .flat_map(|value| match value {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            });
        values.into_iter().any(|value| {
            match self
                .config
                .role_mapping
                .iter()
                .find(|(from, _)| from == value)
            {
                Some((_, admin)) => *admin,
                None => value == "admin",
            }
        })
    }
}

/// Does this bearer token look like a JWT (three dot-separated parts)?
/// Such a token is verified as one when `--jwt-issuer` is set; any other is
/// taken as an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// What a client is told about a refused token.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        _ => format!("the token does not verify: {e}"),
    }
}

/// Who a token speaks for, for the audit log: its subject, else its email,
/// without control characters (one log line stays one line).
fn subject(claims: &Map<String, Value>) -> String {
    let id = ["sub", "email"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(Value::as_str))
        .unwrap_or("jwt");
    id.chars()
        .filter(|c| !c.is_control())
        .take(MAX_PRINCIPAL)
        .collect()
}

#[cfg(test)]
mod tests;
