//! TLS: the router serving HTTPS, and talking to an HTTPS worker that
//! demands a client certificate. Certificates are generated here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::routing::{get, post};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::mock::{MockWorker, args, router};

/// PEM files of a test CA, a server certificate for 127.0.0.1 and a client
/// certificate, all signed by the CA.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(name: &str) -> Pki {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pki-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wasm-router test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let server = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let client = leaf(vec!["router.test".into()], "client");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    Pki { ca, server, client }
}

fn https_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_router_serves_https() {
    let pki = pki("serve");
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.tls_cert_path = Some(pki.server.0.clone());
    a.tls_key_path = Some(pki.server.1.clone());
    let r = router(a).await;
    let client = https_client(&pki.ca);
    let url = format!("https://127.0.0.1:{}", r.addr.port());
    assert_eq!(
        client
            .get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let body: serde_json::Value = client
        .post(format!("{url}/generate"))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["worker"], "a");
    // Plain HTTP on the TLS port does not get through.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://127.0.0.1:{}/health", r.addr.port()))
            .send()
            .await
            .is_err()
    );
    r.shutdown().await.unwrap();
}

/// Issue 15: served over TLS, the admin routes saw no peer address and
/// refused loopback clients with 403.
#[tokio::test]
async fn admin_routes_answer_loopback_clients_over_https() {
    let pki = pki("admin");
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.tls_cert_path = Some(pki.server.0.clone());
    a.tls_key_path = Some(pki.server.1.clone());
    let r = router(a).await;
    let workers = https_client(&pki.ca)
        .get(format!("https://127.0.0.1:{}/workers", r.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(workers.status(), 200);
    r.shutdown().await.unwrap();
}

/// An HTTPS worker that requires a client certificate signed by the CA.
async fn mtls_worker(pki: &Pki) -> String {
    https_worker(pki, true).await
}

/// A self-signed certificate marked as a CA, for 127.0.0.1, as `openssl
/// req -x509` makes them: its certificate and key files.
fn self_signed(name: &str) -> (PathBuf, PathBuf) {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pki-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("self.crt"), dir.join("self.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// Issue 32: a worker serving a self-signed certificate (marked as a CA,
/// as `openssl req -x509` makes them) given as `--ca-cert-paths` is routed
/// (webpki refuses a CA as a server's own certificate: it was a 503); a
/// worker with another self-signed certificate is not.
#[tokio::test]
async fn a_self_signed_worker_certificate_given_as_the_ca_is_trusted_and_no_other() {
    let trusted = self_signed("self-signed");
    let other = self_signed("other-self-signed");
    let pki = Pki {
        ca: trusted.0.clone(),
        server: trusted.clone(),
        client: trusted.clone(),
    };
    let url = https_worker(&pki, false).await;
    let mut a = crate::mock::args(&[]);
    a.worker_urls = vec![url.clone()];
    a.ca_cert_paths = vec![trusted.0.clone()];
    let r = router(a).await;
    let (status, body) = crate::mock::post_json(&r, "/generate", json!({"text": "x"})).await;
    assert_eq!(
        (status, body["worker"].as_str()),
        (200, Some("mtls")),
        "{body}"
    );
    r.shutdown().await.unwrap();

    assert_unreachable(url, other.0).await;
}

/// A router trusting `ca` cannot reach the HTTPS worker at `url`: a
/// request is a 502 `upstream_unreachable`.
async fn assert_unreachable(url: String, ca: PathBuf) {
    let mut a = crate::mock::args(&[]);
    a.worker_urls = vec![url];
    a.ca_cert_paths = vec![ca];
    a.disable_health_check = true;
    // Not `router()`: it waits for the model, which this worker never tells.
    let mut config = wasm_router::config::Config::load(&a).unwrap();
    config.policy_cache_dir = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"));
    let r = wasm_router::server::start(config).await.unwrap();
    let (status, body) = crate::mock::post_json(&r, "/generate", json!({"text": "x"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    r.shutdown().await.unwrap();
}

/// An HTTPS worker with a certificate from the CA, asking for a client
/// certificate from it when `mutual`.
async fn https_worker(pki: &Pki, mutual: bool) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
        .unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(&pki.server.0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server.1).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mutual {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/get_model_info",
            get(|| async { Json(json!({"model_path": "m"})) }),
        )
        .route(
            "/generate",
            post(|| async { Json(json!({"worker": "mtls"})) }),
        );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(app.into_make_service()));
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn mutual_tls_to_a_worker_works_with_the_client_certificate() {
    let pki = pki("mtls");
    let url = mtls_worker(&pki).await;
    let mut a = crate::mock::args(&[]);
    a.worker_urls = vec![url];
    a.ca_cert_paths = vec![pki.ca.clone()];
    a.client_cert_path = Some(pki.client.0.clone());
    a.client_key_path = Some(pki.client.1.clone());
    let r = router(a).await;
    let (status, body) = crate::mock::post_json(&r, "/generate", json!({"text": "x"})).await;
    assert_eq!((status, body["worker"].as_str()), (200, Some("mtls")));
    r.shutdown().await.unwrap();
}

/// Issue 32: a worker serving HTTPS with a certificate from the CA of
/// `--ca-cert-paths`, asking no client certificate, is healthy and routed
/// (it was a 503 `no_healthy_worker`).
#[tokio::test]
async fn an_https_worker_with_a_certificate_from_the_given_ca_is_routed() {
    let pki = pki("server-auth");
    let url = https_worker(&pki, false).await;
    let mut a = crate::mock::args(&[]);
    a.worker_urls = vec![url];
    a.ca_cert_paths = vec![pki.ca.clone()];
    let r = router(a).await;
    let (status, body) = crate::mock::post_json(&r, "/generate", json!({"text": "x"})).await;
    assert_eq!((status, body["worker"].as_str()), (200, Some("mtls")));
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_the_client_certificate_the_worker_is_unreachable() {
    let pki = pki("no-client-cert");
    let url = mtls_worker(&pki).await;
    assert_unreachable(url, pki.ca.clone()).await;
}

#[test]
fn tls_flags_must_come_in_pairs_and_name_files_that_exist() {
    let mut a = crate::mock::args(&[]);
    a.tls_cert_path = Some("/nonexistent/cert.pem".into());
    let err = wasm_router::config::Config::load(&a)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tls-cert-path/--tls-key-path"), "{err}");
    a.tls_key_path = Some("/nonexistent/key.pem".into());
    let err = wasm_router::config::Config::load(&a)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--tls-cert-path") && err.contains("/nonexistent/cert.pem"),
        "{err}"
    );
}
