//! Whether a coordinator answers at all, asked before a run leans on it:
//! a bench pointed at nothing must say so within seconds, not after its
//! patience has run out on every phase.

use std::time::Duration;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// How long the first contact with a coordinator may take, all told.
pub const REACH_LIMIT: Duration = Duration::from_secs(5);

/// Whether gRPC health at `url` says SERVING (quietly: for polling).
pub async fn health_ok(url: &str) -> bool {
    health_ok_with(url, None).await
}

/// [`health_ok`], over `tls` for an `https://` URL.
pub async fn health_ok_with(url: &str, tls: Option<&ClientTlsConfig>) -> bool {
    check(url, tls, Duration::from_millis(500)).await.is_ok()
}

/// An endpoint for the bench's own calls to `url` (health, the watch),
/// with `tls` when given.
pub fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, String> {
    let e = Endpoint::from_shared(url.to_string()).map_err(|e| crate::errors::chain(&e))?;
    match tls {
        Some(t) => e.tls_config(t.clone()).map_err(|e| crate::errors::chain(&e)),
        None => Ok(e),
    }
}

/// Checks that `url` answers gRPC health with SERVING within
/// [`REACH_LIMIT`]; the error says what went wrong, cause included.
pub async fn reach(url: &str) -> Result<(), String> {
    match tokio::time::timeout(REACH_LIMIT, check(url, None, REACH_LIMIT)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {REACH_LIMIT:?}")),
    }
}

async fn check(url: &str, tls: Option<&ClientTlsConfig>, connect_timeout: Duration) -> Result<(), String> {
    let ch = endpoint(url, tls)?
        .connect_timeout(connect_timeout)
        .connect()
        .await
        .map_err(|e| crate::errors::chain(&e))?;
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    match h.check(req).await {
        Ok(r) if r.get_ref().status == 1 => Ok(()),
        Ok(r) => Err(format!("gRPC health says {:?}, not SERVING", r.get_ref().status)),
        Err(s) => Err(format!("gRPC health: {:?}: {}", s.code(), s.message())),
    }
}
