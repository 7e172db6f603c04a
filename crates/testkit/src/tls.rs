//! A throw-away certificate authority (rcgen) that issues server certificates for 127.0.0.1 and
//! localhost, and the rustls server configuration that serves them (HTTP/2 and HTTP/1.1).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh CA (ECDSA P-256) whose certificate a client must trust explicitly.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
}

/// A server certificate issued by a [`TestCa`] and its private key.
#[derive(Clone)]
pub struct ServerCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named `berth-testkit test CA`.
    ///
    /// # Panics
    /// If rcgen fails (it does not with these fixed parameters).
    pub fn new() -> TestCa {
        let made = KeyPair::generate().and_then(|key| {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "berth-testkit test CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            let cert = params.self_signed(&key)?;
            Ok((cert, Issuer::new(params, key)))
        });
        match made {
            Ok((cert, issuer)) => TestCa { issuer, cert_pem: cert.pem(), cert_der: cert.der().to_vec() },
            Err(e) => panic!("cannot create the test CA: {e}"),
        }
    }

    /// The CA certificate, PEM (what a client adds as its only trusted root).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A server certificate for these names (IP addresses or DNS names), e.g.
    /// `["127.0.0.1", "localhost"]`.
    ///
    /// # Panics
    /// If a name is neither an IP address nor a valid DNS name.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let made = KeyPair::generate().and_then(|key| {
            let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
            let mut params = CertificateParams::new(names.clone())?;
            params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &self.issuer)?;
            Ok((cert, key))
        });
        match made {
            Ok((cert, key)) => ServerCert {
                cert_pem: cert.pem(),
                cert_der: cert.der().to_vec(),
                key_pem: key.serialize_pem(),
                key_der: key.serialize_der(),
            },
            Err(e) => panic!("cannot issue a server certificate for {names:?}: {e}"),
        }
    }

    /// A rustls server configuration (aws-lc-rs provider, ALPN h2 and http/1.1) presenting a
    /// certificate for 127.0.0.1 and localhost.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        server_config(&self.issue(&["127.0.0.1", "localhost"]))
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A rustls server configuration for `cert` (aws-lc-rs provider, ALPN h2 and http/1.1).
///
/// # Panics
/// If rustls refuses the certificate or key (it does not for a [`TestCa`] certificate).
pub fn server_config(cert: &ServerCert) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth().with_single_cert(
                vec![CertificateDer::from(cert.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
            )
        });
    match config {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(config)
        }
        Err(e) => panic!("rustls refuses the test certificate: {e}"),
    }
}
