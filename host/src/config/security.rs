//! Settings of who may use the router and how it speaks TLS: the inference
//! routes' API key, the admin boundary's keys and OIDC tokens, HTTPS served
//! and HTTPS towards workers.

use std::path::PathBuf;

use super::{ConfigError, RouterArgs, invalid, readable};

/// A key of the admin boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// Who presents it, for the audit log (`admin-api-key` for
    /// `--admin-api-key`).
    pub id: String,
    /// May it administer (`admin`), or only be told it may not (`user`).
    pub admin: bool,
    /// The secret.
    pub key: String,
}

/// OIDC bearer tokens of the admin boundary (`--jwt-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    /// Where the issuer's keys are; `None`: as its discovery document says.
    pub jwks_uri: Option<String>,
    /// Token role to router role: does it administer.
    pub role_mapping: Vec<(String, bool)>,
}

/// The server side of HTTPS (`--tls-cert-path`, `--tls-key-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The client side, towards workers (`--ca-cert-paths`, and
/// `--client-cert-path`/`--client-key-path` for mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Extra root certificates (PEM) to trust.
    pub ca_certs: Vec<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// `--api-key`, not empty when given.
pub(super) fn api_key(s: &RouterArgs) -> Result<Option<String>, ConfigError> {
    if s.api_key.as_deref() == Some("") {
        return Err(invalid("--api-key", "must not be empty"));
    }
    Ok(s.api_key.clone())
}

/// `--admin-api-key` and `--control-plane-api-keys`, with their roles.
pub(super) fn admin_keys(s: &RouterArgs) -> Result<Vec<AdminKey>, ConfigError> {
    if s.admin_api_keys.iter().any(String::is_empty) {
        return Err(invalid("--admin-api-key", "must not be empty"));
    }
    let mut keys: Vec<AdminKey> = s
        .admin_api_keys
        .iter()
        .map(|key| AdminKey {
            id: "admin-api-key".into(),
            admin: true,
            key: key.clone(),
        })
        .collect();
    for entry in &s.control_plane_api_keys {
        keys.push(control_plane_key(entry)?);
    }
    Ok(keys)
}

/// A `--control-plane-api-keys` entry, `id:name:role:key` as sglang-router
/// takes them (the key may hold `:`; the role is `admin` or `user`).
fn control_plane_key(entry: &str) -> Result<AdminKey, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "--control-plane-api-keys",
            format!("{why} in an entry: write id:name:role:key, role admin or user"),
        )
    };
    let mut parts = entry.splitn(4, ':');
    let (Some(id), Some(_name), Some(role), Some(key)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("four fields are needed"));
    };
    if id.is_empty() || key.is_empty() {
        return Err(bad("an empty id or key"));
    }
    let admin = match role {
        "admin" => true,
        "user" => false,
        _ => return Err(bad(&format!("role {role:?}"))),
    };
    Ok(AdminKey {
        id: id.into(),
        admin,
        key: key.into(),
    })
}

/// `--jwt-issuer` and `--jwt-audience` (both or neither), with the JWKS URL
/// and role mapping that only make sense beside them.
pub(super) fn jwt_config(s: &RouterArgs) -> Result<Option<JwtConfig>, ConfigError> {
    let (issuer, audience) = match (&s.jwt_issuer, &s.jwt_audience) {
        (Some(issuer), Some(audience)) if !issuer.is_empty() && !audience.is_empty() => {
            (issuer.clone(), audience.clone())
        }
        (None, None) => {
            if s.jwt_jwks_uri.is_some() || !s.jwt_role_mapping.is_empty() {
                return Err(invalid(
                    "--jwt-jwks-uri/--jwt-role-mapping",
                    "they need --jwt-issuer and --jwt-audience",
                ));
            }
            return Ok(None);
        }
        _ => {
            return Err(invalid(
                "--jwt-issuer/--jwt-audience",
                "give both, not empty: tokens are checked for their issuer and their audience",
            ));
        }
    };
    for (setting, url) in [
        ("--jwt-issuer", Some(&issuer)),
        ("--jwt-jwks-uri", s.jwt_jwks_uri.as_ref()),
    ] {
        if let Some(url) = url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(setting, format!("{url:?} is not an http(s) URL")));
        }
    }
    let role_mapping = s
        .jwt_role_mapping
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((from, "admin")) if !from.is_empty() => Ok((from.to_owned(), true)),
            Some((from, "user")) if !from.is_empty() => Ok((from.to_owned(), false)),
            _ => Err(invalid(
                "--jwt-role-mapping",
                format!("{entry:?}: write TOKEN_ROLE=admin or TOKEN_ROLE=user"),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(JwtConfig {
        issuer,
        audience,
        jwks_uri: s.jwt_jwks_uri.clone(),
        role_mapping,
    }))
}

/// HTTPS served, when both files are given.
pub(super) fn server_tls(s: &RouterArgs) -> Result<Option<ServerTls>, ConfigError> {
    match (s.tls_cert_path.clone(), s.tls_key_path.clone()) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls {
            cert: readable("--tls-cert-path", cert)?,
            key: readable("--tls-key-path", key)?,
        })),
        (None, None) => Ok(None),
        _ => Err(invalid(
            "--tls-cert-path/--tls-key-path",
            "give both or neither",
        )),
    }
}

/// HTTPS towards workers: extra roots and a client identity.
pub(super) fn client_tls(s: &RouterArgs) -> Result<ClientTls, ConfigError> {
    let identity = match (s.client_cert_path.clone(), s.client_key_path.clone()) {
        (Some(cert), Some(key)) => Some((
            readable("--client-cert-path", cert)?,
            readable("--client-key-path", key)?,
        )),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "--client-cert-path/--client-key-path",
                "give both or neither",
            ));
        }
    };
    Ok(ClientTls {
        ca_certs: s
            .ca_cert_paths
            .iter()
            .map(|p| readable("--ca-cert-paths", p.clone()))
            .collect::<Result<_, _>>()?,
        identity,
    })
}
