//! The few messages of etcd's public API (`etcdserverpb.Lease`, from etcd's
//! `api/etcdserverpb/rpc.proto`) that the side-by-side bench needs, written
//! out with prost's derive so that the comparison costs no second gRPC
//! stack and no build step: field numbers and types are etcd's.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// 0: the server picks one.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// `etcdserverpb.Lease`, the two calls a lease holder makes.
pub struct LeaseClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl LeaseClient {
    pub fn new(channel: Channel) -> Self {
        LeaseClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))
    }

    pub async fn grant(&mut self, ttl_s: i64) -> Result<LeaseGrantResponse, Status> {
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<LeaseGrantRequest, LeaseGrantResponse>::default();
        let req = Request::new(LeaseGrantRequest { ttl: ttl_s, id: 0 });
        let path = PathAndQuery::from_static("/etcdserverpb.Lease/LeaseGrant");
        Ok(self.grpc.unary(req, path, codec).await?.into_inner())
    }

    pub async fn keep_alive<S>(&mut self, requests: S) -> Result<Streaming<LeaseKeepAliveResponse>, Status>
    where
        S: tokio_stream::Stream<Item = LeaseKeepAliveRequest> + Send + 'static,
    {
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default();
        let path = PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive");
        Ok(self
            .grpc
            .streaming(Request::new(requests), path, codec)
            .await?
            .into_inner())
    }
}
