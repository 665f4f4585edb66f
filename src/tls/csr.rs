//! The worker's side of getting a certificate: a key pair generated here
//! (the private key never leaves the machine) and a CSR for it. The CSR
//! asks for nothing in particular: the coordinator decides the name.

use super::TlsError;

/// A fresh key pair (ECDSA P-256) and a PEM CSR signed with it.
pub struct Request {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn generate(name: &str) -> Result<Request, TlsError> {
    let cert = |source| TlsError::Certificate {
        what: "certificate signing request",
        source,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.chars().take(64).collect::<String>());
    let csr = params.serialize_request(&key).map_err(cert)?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(cert)?,
    })
}
