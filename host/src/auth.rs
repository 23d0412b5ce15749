//! Who may use the router: the inference routes' API key
//! ([`require_api_key`]) and the admin boundary ([`require_admin`]): admin
//! keys with their roles, OIDC bearer tokens ([`crate::jwt`]) or, without
//! either, loopback clients only; and the audit log of admin requests.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::AdminKey;
use crate::errors::ApiError;
use crate::jwt;
use crate::state::AppState;

type S = State<Arc<AppState>>;

/// Layer of the inference routes with `--api-key` (`key`; without it
/// there is no layer): a request must present it (`Authorization: Bearer
/// KEY`), else 401.
pub async fn require_api_key(State(key): State<Arc<str>>, req: Request, next: Next) -> Response {
    match bearer(&req) {
        Some(p) if constant_time_eq(p.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Who is asking, as the admin boundary saw it (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id, `loopback`, `remote` (with --allow-remote-admin), or
    /// `unauthenticated`.
    pub id: String,
    /// `api_key`, `jwt` or `none`.
    pub auth_method: &'static str,
    /// `admin` or `user`.
    pub role: &'static str,
}

/// The admin boundary's API keys: with admin keys (`--admin-api-key`,
/// `--control-plane-api-keys`) or JWTs (`--jwt-issuer`, verified by
/// [`crate::jwt`] before this is asked), a request must present a key
/// (`Authorization: Bearer KEY`) whose role is admin (a user key is a 403,
/// none or another a 401, as in sglang-router); without either, only
/// loopback clients pass, unless `--allow-remote-admin` opens the routes to
/// all.
pub fn admin_check(
    keys: &[AdminKey],
    tokens: bool,
    allow_remote: bool,
    presented: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> (Principal, Result<(), ApiError>) {
    let nobody = |id: &str| Principal {
        id: id.into(),
        auth_method: "none",
        role: "user",
    };
    if !keys.is_empty() || tokens {
        let presented = presented.unwrap_or_default().as_bytes();
        // Compare with every key, so timing does not tell which one matched.
        let matched = keys.iter().fold(None, |found, key| {
            let equal = constant_time_eq(presented, key.key.as_bytes());
            found.or(equal.then_some(key))
        });
        return match matched {
            None => (nobody("unauthenticated"), Err(ApiError::Unauthorized)),
            Some(key) => {
                let principal = Principal {
                    id: key.id.clone(),
                    auth_method: "api_key",
                    role: if key.admin { "admin" } else { "user" },
                };
                let result = admits(&principal);
                (principal, result)
            }
        };
    }
    // Without keys, who passes administers.
    let administers = |id: &str| Principal {
        role: "admin",
        ..nobody(id)
    };
    if peer.is_some_and(|ip| ip.is_loopback()) {
        return (administers("loopback"), Ok(()));
    }
    if allow_remote {
        return (administers("remote"), Ok(()));
    }
    (
        nobody("unauthenticated"),
        Err(ApiError::Forbidden(
            "admin routes answer loopback clients only: set --admin-api-key to use them remotely (or --allow-remote-admin)"
                .into(),
        )),
    )
}

/// Whether a principal who proved who it is may administer.
fn admits(principal: &Principal) -> Result<(), ApiError> {
    if principal.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{}'s role is user: the admin routes need the admin role",
            principal.id
        )))
    }
}

/// Compare in constant time (for equal lengths), so timing does not reveal
/// the key.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The bearer token of a request, if any.
pub fn bearer(req: &axum::extract::Request) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Layer of the admin routes: the admin boundary ([`admin_check`], or a
/// verified JWT), and with `--control-plane-audit-enabled` one log line per
/// request: who, what, outcome.
pub async fn require_admin(State(s): S, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let presented = bearer(&req);
    let (principal, allowed) = match (&s.jwt, presented) {
        (Some(verifier), Some(token)) if jwt::looks_like_jwt(token) => {
            match verifier.verify(token).await {
                Ok(verified) => {
                    let principal = Principal {
                        id: verified.subject,
                        auth_method: "jwt",
                        role: if verified.admin { "admin" } else { "user" },
                    };
                    let allowed = admits(&principal);
                    (principal, allowed)
                }
                Err(e) => (
                    Principal {
                        id: "unauthenticated".into(),
                        auth_method: "jwt",
                        role: "user",
                    },
                    Err(ApiError::InvalidToken(e.to_string())),
                ),
            }
        }
        _ => admin_check(
            &s.config.admin_keys,
            s.jwt.is_some(),
            s.config.allow_remote_admin,
            presented,
            peer,
        ),
    };
    let asked = s
        .config
        .audit_admin
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    let response = match allowed {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    if let Some((method, path)) = asked {
        let status = response.status();
        let outcome = if status.is_success() {
            "success"
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            "denied"
        } else {
            "failed"
        };
        tracing::info!(
            target: "wasm_router::audit",
            principal = %principal.id,
            auth_method = principal.auth_method,
            role = principal.role,
            %method,
            path,
            status = status.as_u16(),
            outcome,
            "control_plane_audit"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));

    fn allowed(check: (Principal, Result<(), ApiError>)) -> Result<(), ApiError> {
        check.1
    }

    #[test]
    fn without_keys_only_loopback_passes_unless_opened() {
        assert!(allowed(admin_check(&[], false, false, None, LOOPBACK)).is_ok());
        let v6 = Some("::1".parse().unwrap());
        assert!(allowed(admin_check(&[], false, false, None, v6)).is_ok());
        assert!(matches!(
            allowed(admin_check(&[], false, false, None, REMOTE)),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            allowed(admin_check(&[], false, false, None, None)),
            Err(ApiError::Forbidden(_))
        ));
        assert!(allowed(admin_check(&[], false, true, None, REMOTE)).is_ok());
    }

    /// With JWTs accepted, a loopback client no longer passes keyless.
    #[test]
    fn with_tokens_accepted_loopback_must_prove_who_it_is() {
        assert_eq!(
            allowed(admin_check(&[], true, false, None, LOOPBACK)),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            allowed(admin_check(&[], true, true, Some("guess"), REMOTE)),
            Err(ApiError::Unauthorized)
        );
    }

    fn key(id: &str, admin: bool, secret: &str) -> AdminKey {
        AdminKey {
            id: id.into(),
            admin,
            key: secret.into(),
        }
    }

    #[test]
    fn with_keys_any_admin_one_is_needed_from_anywhere() {
        let keys = [key("a", true, "first"), key("b", true, "second")];
        assert!(allowed(admin_check(&keys, false, false, Some("second"), REMOTE)).is_ok());
        assert!(allowed(admin_check(&keys, false, false, Some("first"), LOOPBACK)).is_ok());
        assert_eq!(
            allowed(admin_check(&keys, false, false, None, LOOPBACK)),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            allowed(admin_check(&keys, false, true, Some("firs"), REMOTE)),
            Err(ApiError::Unauthorized)
        );
    }

    /// Issue 16: `--control-plane-api-keys` roles, as sglang-router 0.3.2
    /// answers them (seen by running it): a user key is a 403, and the
    /// audit names the key.
    #[test]
    fn a_user_key_is_refused_and_named() {
        let keys = [key("k1", true, "s1"), key("k2", false, "s2")];
        let (who, result) = admin_check(&keys, false, false, Some("s2"), LOOPBACK);
        assert!(matches!(result, Err(ApiError::Forbidden(_))), "{result:?}");
        assert_eq!((who.id.as_str(), who.role), ("k2", "user"));
        let (who, result) = admin_check(&keys, false, false, Some("s1"), REMOTE);
        assert_eq!(result, Ok(()));
        assert_eq!(
            (who.id.as_str(), who.auth_method, who.role),
            ("k1", "api_key", "admin")
        );
    }
}
