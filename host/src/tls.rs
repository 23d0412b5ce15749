//! TLS with rustls (ring provider): serving HTTPS (`--tls-cert-path`,
//! `--tls-key-path`) and talking to HTTPS workers with extra roots
//! (`--ca-cert-paths`) and a client certificate for mutual TLS
//! (`--client-cert-path`, `--client-key-path`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{ClientTls, ServerTls};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that could not be used, named.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{setting} {path}: {reason}")]
    File {
        /// The flag naming it.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(setting: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(setting, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(file_error(setting, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(setting, path, e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// A rustls server config (HTTP/1.1).
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                certs("--tls-cert-path", &self.cert)?,
                key("--tls-key-path", &self.key)?,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ClientTls {
    /// A rustls client config: the webpki roots plus the extra
    /// ones, and the client certificate if set. Both HTTP clients towards
    /// workers (forwarding and the router's own calls) use it.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in &self.ca_certs {
            for cert in certs("--ca-cert-paths", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("--ca-cert-paths", path, e))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key_path)) => builder.with_client_auth_cert(
                certs("--client-cert-path", cert)?,
                key("--client-key-path", key_path)?,
            )?,
        })
    }
}
