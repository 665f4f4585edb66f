//! TLS to etcd: `https://` endpoints are verified against `--etcd-ca` (or
//! the system roots), and `--etcd-cert`/`--etcd-key` are presented when
//! etcd asks for a client certificate (`--client-cert-auth`).

use super::{ClusterConfig, ClusterError};
use etcd_client::{Certificate, Identity, TlsOptions};
use std::path::Path;

fn read(path: &Path, flag: &str) -> Result<String, ClusterError> {
    std::fs::read_to_string(path).map_err(|e| ClusterError::Config(format!("{flag} {}: {e}", path.display())))
}

/// The TLS options for `config`'s endpoints: `None` when they are all
/// `http://`. Mixed schemes, and TLS files for plaintext endpoints, are
/// refused: either would send the fleet's state in the clear by mistake.
pub fn options(config: &ClusterConfig) -> Result<Option<TlsOptions>, ClusterError> {
    let https = config.etcd.iter().filter(|e| e.starts_with("https://")).count();
    let files = config.etcd_ca.is_some() || config.etcd_cert.is_some();
    if https == 0 {
        if files {
            return Err(ClusterError::Config(
                "--etcd-ca/--etcd-cert are for https:// etcd endpoints; these are http://".into(),
            ));
        }
        return Ok(None);
    }
    if https != config.etcd.len() {
        return Err(ClusterError::Config(
            "--etcd mixes https:// and http:// endpoints; give one scheme".into(),
        ));
    }
    let mut tls = match &config.etcd_ca {
        Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca, "--etcd-ca")?)),
        None => TlsOptions::new().with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.etcd_cert, &config.etcd_key) {
        tls = tls.identity(Identity::from_pem(read(cert, "--etcd-cert")?, read(key, "--etcd-key")?));
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &[&str]) -> ClusterConfig {
        ClusterConfig {
            etcd: endpoints.iter().map(|e| e.to_string()).collect(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn plaintext_endpoints_need_no_tls_and_take_no_tls_files() {
        assert!(options(&config(&["http://127.0.0.1:2379"])).unwrap().is_none());
        let mut c = config(&["http://127.0.0.1:2379"]);
        c.etcd_ca = Some("/ca.pem".into());
        let err = options(&c).unwrap_err().to_string();
        assert!(err.contains("are for https://"), "{err}");
    }

    #[test]
    fn schemes_are_not_mixed_and_a_missing_ca_file_is_named() {
        let err = options(&config(&["https://a:2379", "http://b:2379"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mixes"), "{err}");
        assert!(options(&config(&["https://a:2379"])).unwrap().is_some());
        let mut c = config(&["https://a:2379"]);
        c.etcd_ca = Some("/nonexistent/etcd-ca.pem".into());
        let err = options(&c).unwrap_err().to_string();
        assert!(err.contains("--etcd-ca /nonexistent/etcd-ca.pem"), "{err}");
    }
}
