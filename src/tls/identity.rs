//! Who a certificate names. Certificates the cluster CA issues carry one
//! URI subject alternative name, SPIFFE-style: `spiffe://edgeplane/worker/{id}`
//! for a worker, `spiffe://edgeplane/admin/{name}` for an operator. The
//! common name is for people only; nothing is decided by it.
//!
//! Only certificates rustls has already verified against the cluster CA
//! are read here, so the name in them is the CA's word.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const WORKER_PREFIX: &str = "spiffe://edgeplane/worker/";
const ADMIN_PREFIX: &str = "spiffe://edgeplane/admin/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A worker, by its worker id.
    Worker(String),
    /// An operator with the admin role, by name.
    Admin(String),
}

/// What a verified client certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub role: Role,
    /// Hex, for logs and the revocation list's reasons.
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertIdentity {
    pub fn worker_id(&self) -> Option<&str> {
        match &self.role {
            Role::Worker(id) => Some(id),
            Role::Admin(_) => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.role, Role::Admin(_))
    }
}

pub fn worker_uri(worker_id: &str) -> String {
    format!("{WORKER_PREFIX}{worker_id}")
}

pub fn admin_uri(name: &str) -> String {
    format!("{ADMIN_PREFIX}{name}")
}

/// Reads a DER certificate; `None` when it names no edgeplane role.
pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let validity = cert.validity();
    let san = cert.subject_alternative_name().ok()??;
    let role = san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => {
            if let Some(id) = uri.strip_prefix(WORKER_PREFIX) {
                Some(Role::Worker(id.to_string()))
            } else {
                uri.strip_prefix(ADMIN_PREFIX).map(|n| Role::Admin(n.to_string()))
            }
        }
        _ => None,
    })?;
    Some(CertIdentity {
        role,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
    })
}

/// A certificate's validity, `(not_before, not_after)` in Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}
