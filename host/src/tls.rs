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
    /// The roots to verify workers' certificates by are unusable.
    #[error("cannot verify workers' certificates: {0}")]
    Roots(#[from] rustls::client::VerifierBuilderError),
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
        let mut given = Vec::new();
        for path in &self.ca_certs {
            for cert in certs("--ca-cert-paths", path)? {
                roots
                    .add(cert.clone())
                    .map_err(|e| file_error("--ca-cert-paths", path, e))?;
                given.push(cert);
            }
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()?;
        let verifier = Arc::new(GivenOrWebPki { webpki, given });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        Ok(match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key_path)) => builder.with_client_auth_cert(
                certs("--client-cert-path", cert)?,
                key("--client-key-path", key_path)?,
            )?,
        })
    }
}

/// Workers' certificates: what webpki accepts from the roots, and also a
/// worker presenting exactly one of the `--ca-cert-paths` certificates as
/// its own. A self-signed certificate made with `openssl req -x509` is
/// marked as a CA, and given as its own CA it is the commonest way to
/// serve HTTPS inside a cluster; webpki refuses a CA used as the server's
/// own certificate (OpenSSL-based clients accept it). The certificate is
/// the one the user named, byte for byte, so only the holder of its key
/// can present it; the handshake's signatures are checked as always.
#[derive(Debug)]
struct GivenOrWebPki {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    given: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for GivenOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_) if self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
