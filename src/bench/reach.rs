//! Whether a coordinator answers at all, asked before a run leans on it:
//! a bench pointed at nothing must say so within seconds, not after its
//! patience has run out on every phase.

use std::time::Duration;
use tonic::transport::Endpoint;

/// How long the first contact with a coordinator may take, all told.
pub const REACH_LIMIT: Duration = Duration::from_secs(5);

/// Whether gRPC health at `url` says SERVING (quietly: for polling).
pub async fn health_ok(url: &str) -> bool {
    check(url, Duration::from_millis(500)).await.is_ok()
}

/// Checks that `url` answers gRPC health with SERVING within
/// [`REACH_LIMIT`]; the error says what went wrong, cause included.
pub async fn reach(url: &str) -> Result<(), String> {
    match tokio::time::timeout(REACH_LIMIT, check(url, REACH_LIMIT)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {REACH_LIMIT:?}")),
    }
}

async fn check(url: &str, connect_timeout: Duration) -> Result<(), String> {
    let ch = Endpoint::from_shared(url.to_string())
        .map_err(|e| crate::errors::chain(&e))?
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
