//! The proxy as a tower service, one per face: `/service/{name}/...` for
//! HTTP clients, and gRPC calls by catalog service name (the router's
//! fallback, which also answers paths nothing serves).

use super::Proxy;
use axum::body::Body;
use axum::response::Response;
use http::Request;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What the proxy's tower service (and the front door, which shares it) returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Which face of the proxy a [`ProxyService`] is.
#[derive(Clone, Copy, Debug)]
enum Face {
    /// `/service/...`.
    Http,
    /// gRPC calls for catalog services (the router's fallback).
    Grpc,
}

/// The proxy as a tower service, for one face.
#[derive(Clone)]
pub struct ProxyService {
    proxy: Arc<Proxy>,
    face: Face,
}

impl ProxyService {
    /// `/service/{name}/...` (full paths, not stripped).
    pub fn http(proxy: Arc<Proxy>) -> Self {
        ProxyService {
            proxy,
            face: Face::Http,
        }
    }

    /// The proxy behind this face.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// gRPC by catalog service name, for the router's fallback.
    pub fn grpc(proxy: Arc<Proxy>) -> Self {
        ProxyService {
            proxy,
            face: Face::Grpc,
        }
    }
}

impl tower::Service<Request<Body>> for ProxyService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> BoxFuture {
        let (p, face) = (self.proxy.clone(), self.face);
        Box::pin(async move {
            Ok(match face {
                Face::Http => p.http(req).await,
                Face::Grpc => p.grpc(req).await,
            })
        })
    }
}
