//! The cluster CA: the one authority every worker and admin certificate in
//! a fleet is signed by, and the trust root the coordinator checks client
//! certificates against.
//!
//! Given as `--ca-cert`/`--ca-key`, or generated on first start into the
//! coordinator's state dir (`ca.pem`, `ca-key.pem`, the key 0600). Several
//! coordinators of one cluster must be given the same CA.

use super::{files, identity, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::time::Duration;

/// Names of the generated CA's files in the state dir.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Validity given to a generated CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Signed a little in the past, so that a peer whose clock runs slightly
/// behind does not refuse a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(60);

pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa(<key>)")
    }
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Certificate { what, source }
}

impl ClusterCa {
    /// A new CA, in memory (`demo --tls`, tests, `edgeplane ca init`).
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let (nb, na) = window(CA_LIFETIME);
        params.not_before = nb;
        params.not_after = na;
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key).map_err(rc("CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rc("CA key"))?;
        let cert_der = files::certs_from_pem(cert_pem.as_bytes())
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Invalid("CA certificate: no PEM certificate".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(rc("CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = String::from_utf8_lossy(&files::read(cert)?).into_owned();
        let key_pem = String::from_utf8_lossy(&files::read(key)?).into_owned();
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// The CA in `dir`, made there (key 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        if cert.exists() || key.exists() {
            return Self::load(&cert, &key);
        }
        let ca = Self::generate("edgeplane cluster CA")?;
        files::write_private(&key, ca.issuer.key().serialize_pem().as_bytes())?;
        files::write_public(&cert, ca.cert_pem.as_bytes())?;
        tracing::info!(path = %cert.display(), "generated the cluster CA");
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key, PEM (for `edgeplane ca init` to write it).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs a worker's CSR: a client certificate for `worker_id`, valid
    /// for `lifetime`; returns it (PEM) and its expiry (Unix seconds). The
    /// CSR's signature is checked (the worker holds the key); everything it
    /// asks for is ignored: the name is the CA's.
    pub fn sign_worker(
        &self,
        csr_pem: &str,
        worker_id: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<(String, i64), TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(rc("certificate signing request"))?;
        let params = leaf(
            name,
            vec![SanType::URI(
                identity::worker_uri(worker_id).try_into().map_err(rc("worker id"))?,
            )],
            ExtendedKeyUsagePurpose::ClientAuth,
            lifetime,
        );
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rc("worker certificate"))?;
        Ok((cert.pem(), params.not_after.unix_timestamp()))
    }

    /// A client certificate with the admin role, its key made here.
    pub fn issue_admin(&self, name: &str, lifetime: Duration) -> Result<Issued, TlsError> {
        let san = SanType::URI(identity::admin_uri(name).try_into().map_err(rc("admin name"))?);
        self.issue(leaf(name, vec![san], ExtendedKeyUsagePurpose::ClientAuth, lifetime))
    }

    /// A server certificate for `hosts` (names or IP addresses).
    pub fn issue_server(&self, hosts: &[String], lifetime: Duration) -> Result<Issued, TlsError> {
        let sans = CertificateParams::new(hosts.to_vec())
            .map_err(rc("server names"))?
            .subject_alt_names;
        let cn = hosts.first().map_or("edgeplane", String::as_str);
        self.issue(leaf(cn, sans, ExtendedKeyUsagePurpose::ServerAuth, lifetime))
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc("key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rc("certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn leaf(cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose, lifetime: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, cn.chars().take(64).collect::<String>());
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let (nb, na) = window(lifetime);
    p.not_before = nb;
    p.not_after = na;
    p.serial_number = Some(serial());
    p
}

/// Valid from a little before now (clock skew) until `lifetime` from now.
fn window(lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - BACKDATE.min(lifetime / 10), now + lifetime)
}

fn serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    // Positive, and never a leading zero byte.
    b[0] = (b[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_worker_certificate_names_the_id_the_ca_chose() {
        let ca = ClusterCa::generate("test CA").unwrap();
        let req = crate::tls::csr::generate("gpu-box-1").unwrap();
        let (pem, not_after) = ca
            .sign_worker(
                &req.csr_pem,
                "w-0123456789abcdef",
                "gpu-box-1",
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = files::certs_from_pem(pem.as_bytes()).remove(0);
        let id = identity::from_der(&der).unwrap();
        assert_eq!(id.worker_id(), Some("w-0123456789abcdef"));
        assert_eq!(id.not_after_unix, not_after);
        let lifetime = id.not_after_unix - crate::tls::unix_now();
        assert!((3598..=3600).contains(&lifetime), "{lifetime}");

        // A CSR whose signature does not match is refused.
        let other = crate::tls::csr::generate("x").unwrap();
        let tampered = req.csr_pem.replace(&req.csr_pem[60..70], &other.csr_pem[60..70]);
        assert!(ca.sign_worker(&tampered, "w-1", "x", Duration::from_secs(60)).is_err());

        let admin = ca.issue_admin("ops", Duration::from_secs(60)).unwrap();
        let der = files::certs_from_pem(admin.cert_pem.as_bytes()).remove(0);
        assert!(identity::from_der(&der).unwrap().is_admin());
    }

    #[test]
    fn a_generated_ca_is_kept_with_its_key_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
    }
}
