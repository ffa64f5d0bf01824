//! TLS on the PostgreSQL protocol: the acceptor pgwire negotiates SSLRequest with, from
//! the PEM certificate chain and key of the configuration (read with
//! `rustls-pki-types`' `PemObject`; the crypto provider is ring, already built for
//! SCRAM, so no C library comes in).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::error::{Error, Result};

/// The acceptor for the certificate chain in `cert` and the private key in `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("[tls] cannot read {}: {e}", what.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("[tls] {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| Error::Config(format!("[tls] certificate and key do not match: {e}")))?;
    // PostgreSQL 17's direct TLS negotiation names this protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
