//! Proxy errors a user can act on: JSON with a stable `error` code.

use crate::routes::Unavailable;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the path names no service; use /service/{{name}}/...")]
    NoServiceName,
    #[error("no service named `{0}` (not in the catalog, and no worker declares it)")]
    UnknownService(String),
    /// A path no route serves, from a client that is not making a gRPC call.
    #[error("nothing is served at `{0}`; services are under /service/{{name}}/...")]
    NotFound(String),
    #[error("{}", .reason.explain(.service))]
    NoReadyEndpoint { service: String, reason: Unavailable },
    #[error("upstream `{service}` on worker `{worker}` failed: {detail}")]
    Upstream {
        service: String,
        worker: String,
        detail: String,
    },
    #[error("upstream `{service}` on worker `{worker}` did not answer within {timeout}")]
    Timeout {
        service: String,
        worker: String,
        timeout: String,
    },
    #[error("request body: {0}")]
    Body(String),
    /// The request target the replica would get (its prefix, the path and
    /// the query) is longer than any request line can carry on every path.
    #[error("request target too long: the replica's path and query would be more than {limit} bytes")]
    TargetTooLong { limit: usize },
    /// A path that cannot be written as a request target.
    #[error("the path cannot be forwarded: {0}")]
    BadPath(String),
    /// A request that claims to come from another coordinator without the
    /// cluster secret.
    #[error("forwarded-by-peer headers without the cluster secret")]
    PeerRefused,
    /// A request head (or the header list it makes) past the bound.
    #[error("request headers too large: more than {limit} bytes")]
    HeadersTooLarge { limit: usize },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServiceName => StatusCode::NOT_FOUND,
            ProxyError::UnknownService(_) | ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::NoReadyEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Body(_) | ProxyError::BadPath(_) => StatusCode::BAD_REQUEST,
            ProxyError::TargetTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::PeerRefused => StatusCode::FORBIDDEN,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoServiceName => "no_service_name",
            ProxyError::UnknownService(_) => "unknown_service",
            ProxyError::NotFound(_) => "not_found",
            ProxyError::NoReadyEndpoint { .. } => "no_ready_endpoint",
            ProxyError::Upstream { .. } => "upstream_failed",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::Body(_) => "bad_request_body",
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::TargetTooLong { .. } => "uri_too_long",
            ProxyError::PeerRefused => "peer_refused",
            ProxyError::HeadersTooLarge { .. } => "request_headers_too_large",
        }
    }

    /// As a gRPC status code, for calls routed by gRPC service name.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ProxyError::NoServiceName | ProxyError::UnknownService(_) | ProxyError::NotFound(_) => {
                tonic::Code::Unimplemented
            }
            ProxyError::NoReadyEndpoint { .. } | ProxyError::Upstream { .. } => tonic::Code::Unavailable,
            ProxyError::Timeout { .. } => tonic::Code::DeadlineExceeded,
            ProxyError::Body(_) | ProxyError::BadPath(_) | ProxyError::TargetTooLong { .. } => {
                tonic::Code::InvalidArgument
            }
            ProxyError::HeadersTooLarge { .. } => tonic::Code::ResourceExhausted,
            ProxyError::PeerRefused => tonic::Code::PermissionDenied,
        }
    }

    pub fn into_response(self, request_id: &str) -> Response {
        let body = self.body(request_id);
        let mut r = (self.status(), axum::Json(body)).into_response();
        if let Ok(v) = request_id.parse() {
            r.headers_mut().insert("x-request-id", v);
        }
        r
    }

    /// The JSON a client gets: `error` (the stable code), `message`,
    /// `request_id`, and the service and worker concerned where known.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut body = crate::errors::envelope(self.code(), self);
        body["request_id"] = request_id.into();
        match self {
            ProxyError::NoReadyEndpoint { service, reason } => {
                body["service"] = service.clone().into();
                body["reason"] = reason.code().into();
            }
            ProxyError::UnknownService(s) => body["service"] = s.clone().into(),
            ProxyError::Upstream { service, worker, .. } | ProxyError::Timeout { service, worker, .. } => {
                body["service"] = service.clone().into();
                body["worker"] = worker.clone().into();
            }
            _ => {}
        }
        body
    }
}
