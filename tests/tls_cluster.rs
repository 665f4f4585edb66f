//! A cluster with TLS everywhere it is configured: etcd over TLS with a
//! client certificate, the coordinator-to-coordinator hop at `https://`
//! verified against the cluster CA, and a revocation made on one
//! coordinator cutting the worker's session on the other.

mod common;

use common::etcd::{Etcd, EtcdTls};
use common::tls::{channel, https, Pki};
use common::{start_agent, within, TestCoordinator, PATIENCE};
use edgeplane::coordinator::CoordinatorConfig;
use edgeplane::proto::{admin_client::AdminClient, ListWorkersRequest, RevokeWorkerRequest};
use std::time::Duration;

/// etcd's certificates, from the cluster CA: a server certificate for
/// 127.0.0.1 and a client certificate for the coordinators.
fn etcd_tls(pki: &Pki) -> EtcdTls {
    let server = pki
        .ca
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    let client = pki.ca.issue_admin("etcd-client", Duration::from_secs(3600)).unwrap();
    let w = |name: &str, body: &str| {
        std::fs::write(pki.path(name), body).unwrap();
        pki.path(name)
    };
    EtcdTls {
        ca: pki.path("ca.pem"),
        cert: w("etcd.pem", &server.cert_pem),
        key: w("etcd-key.pem", &server.key_pem),
        client_cert: w("etcd-client.pem", &client.cert_pem),
        client_key: w("etcd-client-key.pem", &client.key_pem),
    }
}

fn member(pki: &Pki, etcd: &Etcd, tls: &EtcdTls, id: &str) -> CoordinatorConfig {
    let mut c = pki.config();
    c.cluster.etcd = vec![etcd.url.clone()];
    c.cluster.etcd_ca = Some(tls.ca.clone());
    c.cluster.etcd_cert = Some(tls.client_cert.clone());
    c.cluster.etcd_key = Some(tls.client_key.clone());
    c.cluster.cluster = "tls".into();
    c.cluster.coordinator_id = Some(id.into());
    c.cluster.cluster_secret = Some("the-cluster-secret".into());
    c.cluster.state_dir = Some(pki.path(&format!("state-{id}")));
    c
}

async fn admin(c: &TestCoordinator, pki: &Pki) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(
        channel(c, &pki.client(Some(("admin.pem", "admin-key.pem"))))
            .await
            .unwrap(),
    )
}

/// `POST /service/notes/convert` through `c` over TLS: status line and body.
async fn convert(c: &TestCoordinator, pki: &Pki) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.pem"))
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"notes":"x","client_name":"c"}"#,
        ])
        .arg(format!("{}/service/notes/convert", https(c)))
        .output()
        .await
        .expect("curl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn etcd_and_the_peer_hop_speak_tls_and_a_revocation_reaches_every_coordinator() {
    let pki = Pki::new();
    let tls = etcd_tls(&pki);
    let etcd = Etcd::start_tls(tls.clone()).await;
    assert!(etcd.url.starts_with("https://"));
    let a = TestCoordinator::start(member(&pki, &etcd, &tls, "coord-a")).await;
    let b = TestCoordinator::start(member(&pki, &etcd, &tls, "coord-b")).await;

    // A tunnel worker on coord-a; coord-b reaches it through coord-a.
    let backend = common::backend::start("tunnel-on-a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = a.worker_config("notes-a", dir.path());
    cfg.coordinator = https(&a);
    cfg.ca_cert = Some(pki.path("ca.pem"));
    cfg.services = vec![("notes".into(), backend.url.clone())];
    cfg.data_path = "tunnel".parse().unwrap();
    cfg.probe_interval = Duration::from_millis(50);
    let (agent, _stop) = start_agent(cfg).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    let started = std::time::Instant::now();
    loop {
        let out = convert(&b, &pki).await;
        if out.contains("\"served_by\":\"tunnel-on-a\"") {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "coord-b never reached the replica: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // coord-a is announced at https://, and etcd holds it (over TLS).
    let mut client = etcd.client().await;
    let key = "/tls/coordinators/coord-a";
    let got = client.get(key, None).await.unwrap();
    let value = String::from_utf8_lossy(got.kvs()[0].value()).into_owned();
    assert!(
        value.contains(&format!("https://127.0.0.1:{}", a.addr.port())),
        "{value}"
    );

    // Revoked on coord-b: coord-a, which holds the session, cuts it.
    let r = admin(&b, &pki)
        .await
        .revoke_worker(RevokeWorkerRequest { worker: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.session_closed, "coord-b did not hold it");
    let cut = tokio::time::timeout(Duration::from_secs(1), agent.wait_for(|s| !s.connected)).await;
    assert!(cut.is_ok(), "coord-a cuts the session within a second");
    let refused = within(agent.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains("was revoked")))).await;
    assert!(refused.last_error.unwrap().contains("PermissionDenied"));
    let learnt = std::fs::read_to_string(pki.path("state-coord-a/revoked.json")).unwrap();
    assert!(learnt.contains(&id), "coord-a keeps it in its own list: {learnt}");
    for c in [&a, &b] {
        let list = admin(c, &pki)
            .await
            .list_workers(ListWorkersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(list.workers.iter().all(|w| w.worker_id != id), "{:?}", list.workers);
    }
    // A coordinator started afterwards knows it too, from etcd.
    let c = TestCoordinator::start(member(&pki, &etcd, &tls, "coord-c")).await;
    let path = pki.path("state-coord-c/revoked.json");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&path).is_ok_and(|s| s.contains(&id)) {
        assert!(started.elapsed() < PATIENCE, "coord-c never learnt the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in [a, b, c] {
        c.stop().await;
    }
}

#[tokio::test]
async fn etcd_refuses_a_coordinator_without_its_client_certificate() {
    let pki = Pki::new();
    let tls = etcd_tls(&pki);
    let etcd = Etcd::start_tls(tls.clone()).await;
    let mut config = member(&pki, &etcd, &tls, "coord-x");
    config.cluster.etcd_cert = None;
    config.cluster.etcd_key = None;
    let c = TestCoordinator::start(config).await;
    let err = within(c.task).await.unwrap().expect_err("etcd refuses it");
    let msg = edgeplane::errors::chain(&err);
    assert!(msg.contains(&etcd.url), "the endpoint is named: {msg}");
}
