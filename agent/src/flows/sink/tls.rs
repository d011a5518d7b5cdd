//! TLS client setup for the RFC 5425 transport. The `syslog` crate has no TLS and no octet
//! counting, so zonewall builds this part on tokio-rustls (DESIGN section 10).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::config::{Endpoint, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} from {path}: {source}; expected a PEM file")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "CA bundle {path} holds no certificate; expected one or more `BEGIN CERTIFICATE` blocks"
    )]
    EmptyBundle { path: PathBuf },
    #[error("CA bundle {path}: certificate {index} is not a usable trust anchor: {source}")]
    BadAnchor {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
    #[error("client certificate {cert} holds no certificate")]
    EmptyChain { cert: PathBuf },
    #[error("client certificate {cert} and key {key} cannot be used together: {source}")]
    ClientIdentity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("`{name}` is not a valid TLS server name (DNS name or IP address)")]
    ServerName { name: String },
    #[error("TLS provider setup failed: {0}")]
    Provider(rustls::Error),
}

/// Everything a TLS sink needs to connect, loaded once at start so a bad file is reported
/// before any flow is exported.
#[derive(Clone)]
pub struct TlsClient {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn pem_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsSetupError {
    let path = path.to_path_buf();
    move |source| TlsSetupError::Pem { what, path, source }
}

impl TlsClient {
    pub fn load(endpoint: &Endpoint, files: &TlsFiles) -> Result<Self, TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        let anchors = CertificateDer::pem_file_iter(&files.ca)
            .map_err(pem_error("CA certificates", &files.ca))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("CA certificates", &files.ca))?;
        if anchors.is_empty() {
            return Err(TlsSetupError::EmptyBundle {
                path: files.ca.clone(),
            });
        }
        for (index, anchor) in anchors.into_iter().enumerate() {
            roots
                .add(anchor)
                .map_err(|source| TlsSetupError::BadAnchor {
                    path: files.ca.clone(),
                    index,
                    source,
                })?;
        }

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Provider)?
            .with_root_certificates(roots);
        let config = match &files.client_identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = CertificateDer::pem_file_iter(&identity.cert)
                    .map_err(pem_error("client certificate", &identity.cert))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(pem_error("client certificate", &identity.cert))?;
                if chain.is_empty() {
                    return Err(TlsSetupError::EmptyChain {
                        cert: identity.cert.clone(),
                    });
                }
                let key = PrivateKeyDer::from_pem_file(&identity.key)
                    .map_err(pem_error("client private key", &identity.key))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsSetupError::ClientIdentity {
                        cert: identity.cert.clone(),
                        key: identity.key.clone(),
                        source,
                    })?
            }
        };

        let name = files.server_name.as_deref().unwrap_or(&endpoint.host);
        let server_name =
            ServerName::try_from(name.to_owned()).map_err(|_| TlsSetupError::ServerName {
                name: name.to_owned(),
            })?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}
