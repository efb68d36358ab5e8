//! rustls client configuration (ring provider): a CA file or the system roots, and an optional
//! client certificate for mutual TLS.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::UpstreamError;
use super::config::TlsConfig;

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let f = File::open(path).map_err(|e| UpstreamError::Tls(format!("{}: {e}", path.display())))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(f)).collect();
    let certs = certs.map_err(|e| UpstreamError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(UpstreamError::Tls(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, UpstreamError> {
    let f = File::open(path).map_err(|e| UpstreamError::Tls(format!("{}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| UpstreamError::Tls(format!("{}: {e}", path.display())))?
        .ok_or_else(|| UpstreamError::Tls(format!("{}: no PEM private key", path.display())))
}

/// Builds the client configuration.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, UpstreamError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| UpstreamError::Tls(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load a system CA certificate");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(UpstreamError::Tls(
                    "no system CA certificates found; set upstream.tls.ca".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| UpstreamError::Tls(format!("client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(UpstreamError::Tls(
                "tls.cert and tls.key go together".into(),
            ));
        }
    };
    Ok(Arc::new(config))
}
