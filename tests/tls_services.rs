//! TLS to services: a worker declaring an `https://` service, reached with
//! TLS and verified on every path that dials it (the coordinator's direct
//! path, fast and hyper; the worker's end of the tunnel, forwarded requests
//! and raw pipes; gRPC; readiness probes), and refused with the reason when
//! the service's certificate does not verify.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::notes::{notes_client::NotesClient, ConvertRequest};
use edgeplane::proto::ServiceState;
use edgeplane::tls::ClusterCa;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A service CA, a certificate it issued for 127.0.0.1, and another CA
/// that issued nothing here.
struct ServicePki {
    dir: tempfile::TempDir,
}

impl ServicePki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("service CA").unwrap();
        let other = ClusterCa::generate("some other CA").unwrap();
        let cert = ca
            .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
            .unwrap();
        let w = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        w("service-ca.pem", ca.cert_pem());
        w("other-ca.pem", other.cert_pem());
        w("service.pem", &cert.cert_pem);
        w("service-key.pem", &cert.key_pem);
        ServicePki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The sample notes service over TLS; its `https://` URL.
async fn https_notes(pki: &ServicePki, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let sample = edgeplane::sample::SampleConfig {
        port: 0,
        load_time: Duration::ZERO,
        name: "tls-notes".into(),
        bind: "127.0.0.1".parse().unwrap(),
        tls_cert: Some(pki.path("service.pem")),
        tls_key: Some(pki.path("service-key.pem")),
    };
    tokio::spawn(edgeplane::sample::serve(listener, sample, stop.clone()));
    url
}

/// A worker declaring `notes` at `url` over `data_path`, trusting
/// `service_ca` for it.
fn notes_worker(
    c: &TestCoordinator,
    url: &str,
    data_path: &str,
    service_ca: PathBuf,
    dir: &std::path::Path,
) -> edgeplane::worker::WorkerConfig {
    let mut cfg = c.worker_config(&format!("tls-notes-{data_path}"), dir);
    cfg.services = vec![("notes".into(), url.to_string())];
    cfg.data_path = data_path.parse().unwrap();
    cfg.service_ca = Some(service_ca);
    cfg.probe_interval = Duration::from_millis(50);
    cfg
}

async fn convert_http1(c: &TestCoordinator) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let r = client
        .post(format!("{}/service/notes/convert", c.url))
        .json(&serde_json::json!({"notes": "# over tls", "client_name": "tls-client"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn an_https_service_is_reached_with_tls_on_every_path() {
    let pki = ServicePki::new();
    let stop = CancellationToken::new();
    let url = https_notes(&pki, &stop).await;
    for fast_path in [true, false] {
        let config = CoordinatorConfig {
            http1_fast_path: fast_path,
            ..fast_config()
        };
        let mut config = config;
        config.tls.service_ca = Some(pki.path("service-ca.pem"));
        let c = TestCoordinator::start(config).await;
        for data_path in ["direct", "tunnel"] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = notes_worker(&c, &url, data_path, pki.path("service-ca.pem"), dir.path());
            let name = cfg.name.clone().unwrap();
            let (agent, agent_stop) = start_agent(cfg).await;
            let mut watch = c.watch().await;
            // Ready once the probe's GET /health over TLS has passed.
            watch
                .until_service(Some(&name), Some("notes-coa"), ServiceState::Ready)
                .await;
            let (status, body) = convert_http1(&c).await;
            let case = format!("fast path {fast_path}, {data_path}");
            assert_eq!(status, 200, "{case}: {body}");
            assert_eq!(body["served_by"], "tls-notes", "{case}: {body}");
            assert_eq!(body["client_name"], "tls-client", "{case}: {body}");
            // gRPC by service name: HTTP/2 with ALPN h2 to the service.
            let reply = NotesClient::new(c.channel().await)
                .convert(ConvertRequest {
                    notes: "line".into(),
                    client_name: "grpc-client".into(),
                })
                .await
                .unwrap_or_else(|s| panic!("{case}: gRPC: {s:?}"))
                .into_inner();
            assert_eq!(reply.served_by, "tls-notes", "{case}");
            agent_stop.cancel();
            within(agent.join()).await;
        }
        c.stop().await;
    }
    stop.cancel();
}

#[tokio::test]
async fn a_service_certificate_that_does_not_verify_is_refused_with_the_reason() {
    let pki = ServicePki::new();
    let stop = CancellationToken::new();
    let url = https_notes(&pki, &stop).await;

    // The direct path: the worker trusts the service, the coordinator
    // (trusting only another CA) does not, and says why.
    let mut config = fast_config();
    config.tls.service_ca = Some(pki.path("other-ca.pem"));
    let c = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = notes_worker(&c, &url, "direct", pki.path("service-ca.pem"), dir.path());
    let (agent, agent_stop) = start_agent(cfg).await;
    c.watch()
        .await
        .until_service(Some("tls-notes-direct"), Some("notes-coa"), ServiceState::Ready)
        .await;
    for http1_only in [true, false] {
        let mut client = reqwest::Client::builder();
        if http1_only {
            client = client.http1_only();
        }
        let r = client
            .build()
            .unwrap()
            .post(format!("{}/service/notes/convert", c.url))
            .json(&serde_json::json!({"notes": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let body: serde_json::Value = r.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
            "the reason is named: {body}"
        );
    }
    // The coordinator is unharmed.
    let h = reqwest::get(format!("{}/health", c.url)).await.unwrap();
    assert!(h.status().is_success());
    agent_stop.cancel();
    within(agent.join()).await;

    // The worker's side: its probe's handshake fails, so the service is
    // never reported ready, and the status says why.
    let dir = tempfile::tempdir().unwrap();
    let cfg = notes_worker(&c, &url, "tunnel", pki.path("other-ca.pem"), dir.path());
    let (agent, agent_stop) = start_agent(cfg).await;
    let e = c
        .watch()
        .await
        .until(|e| {
            e.worker.as_ref().is_some_and(|w| {
                w.name == "tls-notes-tunnel"
                    && w.services.iter().any(|s| {
                        s.name == "notes-coa"
                            && s.state == ServiceState::Loading as i32
                            && s.message.contains("invalid peer certificate")
                    })
            })
        })
        .await;
    let w = e.worker.unwrap();
    assert!(
        w.services
            .iter()
            .all(|s| s.state != ServiceState::Ready as i32 || s.name != "notes-coa"),
        "{w:?}"
    );
    agent_stop.cancel();
    within(agent.join()).await;
    c.stop().await;
    stop.cancel();
}
