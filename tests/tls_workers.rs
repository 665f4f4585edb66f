//! Workers and TLS: a join token and a CSR get a certificate, the
//! certificate is the worker's identity from then on, and every refusal
//! is clear and leaves the coordinator serving: a required certificate
//! missing, another CA's server certificate, an expired certificate, a
//! revoked worker, one worker's certificate with another's id or token,
//! join tokens expired, used up or for other names, a read-scoped token
//! draining. Renewal keeps the stream; a worker away past its
//! certificate's expiry joins again and gets its id back.

mod common;

use common::tls::{channel, https, Pki};
use common::{hello, start_agent, within, RawWorker, TestCoordinator, PATIENCE};
use edgeplane::proto::{
    admin_client::AdminClient, enrollment_client::EnrollmentClient, worker_control_client::WorkerControlClient,
    CreateJoinTokenRequest, DrainWorkerRequest, JoinRequest, ListWorkersRequest, RevokeWorkerRequest,
};
use edgeplane::tls::client::ClientTls;
use edgeplane::worker::{AgentHandle, WorkerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn tls_worker(c: &TestCoordinator, pki: &Pki, name: &str, dir: &std::path::Path, token: Option<&str>) -> WorkerConfig {
    let mut cfg = c.worker_config(name, dir);
    cfg.coordinator = https(c);
    cfg.ca_cert = Some(pki.path("ca.pem"));
    cfg.join_token = token.map(str::to_string);
    cfg
}

async fn admin(c: &TestCoordinator, pki: &Pki) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(
        channel(c, &pki.client(Some(("admin.pem", "admin-key.pem"))))
            .await
            .unwrap(),
    )
}

async fn token(c: &TestCoordinator, pki: &Pki, pattern: &str, uses: u32, ttl: u64) -> String {
    let req = CreateJoinTokenRequest {
        ttl_seconds: ttl,
        name_pattern: pattern.into(),
        uses,
    };
    admin(c, pki)
        .await
        .create_join_token(req)
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// The worker id and lifetime the certificate in a worker's state dir names.
fn stored_cert(dir: &std::path::Path) -> edgeplane::tls::CertIdentity {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("worker-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read(dir.join("worker-cert.pem")).unwrap();
    let der = edgeplane::tls::files::certs_from_pem(&pem).remove(0);
    edgeplane::tls::identity::from_der(&der).expect("a worker certificate")
}

async fn last_error(agent: &AgentHandle, contains: &str) -> String {
    let s = within(agent.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains(contains)))).await;
    s.last_error.unwrap()
}

fn spawn(cfg: WorkerConfig) -> (AgentHandle, CancellationToken) {
    let stop = CancellationToken::new();
    (edgeplane::worker::spawn(cfg, stop.clone()).unwrap(), stop)
}

#[tokio::test]
async fn join_tokens_give_certificates_and_the_certificate_is_the_identity() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.tls.require_client_cert = true;
    let c = TestCoordinator::start(config).await;
    let dirs = tempfile::tempdir().unwrap();
    let gpu = token(&c, &pki, "gpu-box-*", 1, 0).await;

    // Joins, stores a certificate naming its id, then speaks mutual TLS.
    let (a, _sa) = start_agent(tls_worker(&c, &pki, "gpu-box-1", dirs.path(), Some(&gpu))).await;
    let id = a.status().borrow().worker_id.clone().unwrap();
    assert_eq!(
        stored_cert(&dirs.path().join("gpu-box-1")).worker_id(),
        Some(id.as_str())
    );

    // The same token: used up; for another name: refused by its pattern;
    // an expired one; a made-up one.
    let (b, _sb) = spawn(tls_worker(&c, &pki, "gpu-box-2", dirs.path(), Some(&gpu)));
    assert!(last_error(&b, "join refused").await.contains("is used up"));
    let other = token(&c, &pki, "gpu-box-*", 0, 0).await;
    let (d, _sd) = spawn(tls_worker(&c, &pki, "cpu-box-1", dirs.path(), Some(&other)));
    assert!(last_error(&d, "join refused")
        .await
        .contains("is for workers named `gpu-box-*`"));
    let brief = token(&c, &pki, "", 0, 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // the token's wall-clock TTL
    let (e, _se) = spawn(tls_worker(&c, &pki, "any-1", dirs.path(), Some(&brief)));
    assert!(last_error(&e, "join refused").await.contains("has expired"));
    let (f, _sf) = spawn(tls_worker(&c, &pki, "any-2", dirs.path(), Some("abcdef.nope")));
    assert!(last_error(&f, "join refused").await.contains("Unauthenticated"));

    // No certificate where one is required: refused, with what to do.
    let ch = channel(&c, &pki.client(None)).await.unwrap();
    let err = RawWorker::try_open(ch, None).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("a client certificate is required"),
        "{}",
        err.message()
    );

    // Still serving, the joined worker still connected.
    let workers = admin(&c, &pki)
        .await
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap();
    assert_eq!(workers.into_inner().workers.len(), 1);
    assert!(a.status().borrow().connected);
    c.stop().await;
}

/// Joins by hand: a key, a CSR, a certificate; returns the TLS identity.
async fn join_by_hand(c: &TestCoordinator, pki: &Pki, name: &str) -> (String, ClientTls) {
    let req = edgeplane::tls::csr::generate(name).unwrap();
    let ch = channel(c, &pki.client(None)).await.unwrap();
    let r = EnrollmentClient::new(ch)
        .join(JoinRequest {
            name: name.into(),
            csr_pem: req.csr_pem,
            instance_id: format!("{name}-instance"),
            previous_worker_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let tls = ClientTls {
        ca_pem: Some(pki.ca.cert_pem().to_string()),
        identity: Some((r.certificate_pem, req.key_pem)),
    };
    (r.worker_id, tls)
}

#[tokio::test]
async fn one_workers_certificate_cannot_speak_for_another() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let (a_id, a_tls) = join_by_hand(&c, &pki, "box-a").await;
    let (b_id, b_tls) = join_by_hand(&c, &pki, "box-b").await;
    assert_ne!(a_id, b_id);
    let mut b = RawWorker::open(channel(&c, &b_tls).await.unwrap(), None).await;
    let b_welcome = b.hello(hello("box-b", "box-b-instance", "")).await;
    assert_eq!(b_welcome.worker_id, b_id, "the id is the certificate's");

    // A's certificate with B's resume token, then with B's id.
    for h in [
        hello("box-a", "box-a-instance", &b_welcome.resume_token),
        edgeplane::proto::Hello {
            previous_worker_id: b_id.clone(),
            ..hello("box-a", "box-a-instance", "")
        },
    ] {
        let mut a = RawWorker::open(channel(&c, &a_tls).await.unwrap(), None).await;
        a.send(edgeplane::proto::worker_message::Msg::Hello(h)).await;
        let err = a.recv().await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(
            err.message().contains(&format!("names worker {a_id}")),
            "{}",
            err.message()
        );
    }
    // A's certificate opening a tunnel for B with B's token.
    let mut req = tonic::Request::new(tokio_stream::empty());
    req.metadata_mut()
        .insert("x-edgeplane-worker-id", b_id.parse().unwrap());
    req.metadata_mut()
        .insert("x-edgeplane-resume-token", b_welcome.resume_token.parse().unwrap());
    let err = WorkerControlClient::new(channel(&c, &a_tls).await.unwrap())
        .tunnel(req)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}", err.message());

    // B is untouched: its session still answers keepalives.
    b.send(edgeplane::proto::worker_message::Msg::Keepalive(
        edgeplane::proto::Keepalive {
            seq: 7,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(
        b.recv().await,
        Ok(Some(edgeplane::proto::coordinator_message::Msg::KeepaliveAck(_)))
    ));
    c.stop().await;
}

#[tokio::test]
async fn a_revoked_worker_is_cut_off_at_once_and_stays_out() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let dirs = tempfile::tempdir().unwrap();
    let (a, _s) = start_agent(tls_worker(&c, &pki, "revokee", dirs.path(), None)).await;
    let id = a.status().borrow().worker_id.clone().unwrap();
    let r = admin(&c, &pki)
        .await
        .revoke_worker(RevokeWorkerRequest { worker: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.session_closed);
    let cut = tokio::time::timeout(Duration::from_secs(1), a.wait_for(|s| !s.connected)).await;
    assert!(cut.is_ok(), "the session is cut within a second");
    let refused = last_error(&a, "was revoked").await;
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let list = admin(&c, &pki)
        .await
        .list_workers(ListWorkersRequest::default())
        .await
        .unwrap();
    assert!(list.into_inner().workers.is_empty(), "its record is gone");
    // Kept in the state dir: a restarted coordinator refuses it too.
    let revoked = std::fs::read_to_string(pki.path("state/revoked.json")).unwrap();
    assert!(revoked.contains(&id));
    c.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_worker() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let stranger = Pki::new();
    let dirs = tempfile::tempdir().unwrap();
    let mut cfg = tls_worker(&c, &pki, "wary", dirs.path(), None);
    cfg.ca_cert = Some(stranger.path("ca.pem"));
    let (w, _s) = spawn(cfg);
    let err = last_error(&w, "certificate").await;
    // (The two test CAs share a name, so rustls says BadSignature; with
    // different names, UnknownIssuer.)
    assert!(err.contains("invalid peer certificate"), "{err}");
    // It keeps trying (the error is refreshed by later attempts) and the
    // coordinator is unharmed.
    assert!(!w.status().borrow().connected);
    assert!(channel(&c, &pki.client(None)).await.is_ok());
    c.stop().await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_at_the_handshake() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let req = edgeplane::tls::csr::generate("late").unwrap();
    let (pem, _) = pki
        .ca
        .sign_worker(&req.csr_pem, "w-0123456789ab", "late", Duration::from_secs(1))
        .unwrap();
    let tls = ClientTls {
        ca_pem: Some(pki.ca.cert_pem().to_string()),
        identity: Some((pem, req.key_pem)),
    };
    tokio::time::sleep(Duration::from_millis(2100)).await; // past its wall-clock expiry
    let refused = match channel(&c, &tls).await {
        Err(e) => edgeplane::errors::chain(&e),
        // The handshake's outcome can arrive with the first request.
        Ok(ch) => RawWorker::try_open(ch, None).await.err().expect("refused").to_string(),
    };
    assert!(
        refused.to_lowercase().contains("expired") || refused.contains("certificate"),
        "{refused}"
    );
    assert!(channel(&c, &pki.client(None)).await.is_ok(), "still serving");
    c.stop().await;
}

#[tokio::test]
async fn a_worker_renews_before_expiry_on_its_stream_and_rejoins_after_being_away() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.tls.cert_lifetime = Duration::from_secs(3);
    let c = TestCoordinator::start(config).await;
    let dirs = tempfile::tempdir().unwrap();
    let dir = dirs.path().join("renewer");
    let cfg = tls_worker(&c, &pki, "renewer", dirs.path(), Some("unused-static"));
    let (a, stop) = start_agent(cfg.clone()).await;
    let id = a.status().borrow().worker_id.clone().unwrap();
    let first = stored_cert(&dir);
    // Renewed, and still connected past the first certificate's expiry.
    let mut serials = vec![first.serial.clone()];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while serials.len() < 2 || edgeplane::tls::unix_now() <= first.not_after_unix {
        assert!(
            tokio::time::Instant::now() < deadline,
            "renewed {} times",
            serials.len() - 1
        );
        let now = stored_cert(&dir).serial;
        if serials.last() != Some(&now) {
            serials.push(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(edgeplane::tls::unix_now() >= first.not_after_unix);
    let s = a.status().borrow().clone();
    assert_eq!((s.sessions, s.connected), (1, true), "the stream was never dropped");

    // Away past its certificate's expiry, it joins again and keeps its id.
    stop.cancel();
    a.join().await;
    let held = stored_cert(&dir);
    let wait = (held.not_after_unix - edgeplane::tls::unix_now() + 1).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await; // wall-clock expiry
    let (b, _s2) = start_agent(cfg).await;
    assert_eq!(b.status().borrow().worker_id.as_deref(), Some(id.as_str()));
    assert_ne!(stored_cert(&dir).serial, held.serial, "a new certificate");
    c.stop().await;
}

fn with<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn a_read_scoped_token_lists_but_cannot_drain() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.admin_token = Some("adm".into());
    config.read_token = Some("ro".into());
    let c = TestCoordinator::start(config).await;
    let ch = channel(&c, &pki.client(None)).await.unwrap();
    let mut admin = AdminClient::new(ch);
    admin
        .list_workers(with("ro", ListWorkersRequest::default()))
        .await
        .unwrap();
    let drain = DrainWorkerRequest {
        worker: "w-000000000000".into(),
        reason: String::new(),
    };
    let err = admin.drain_worker(with("ro", drain.clone())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("needs the admin scope"), "{}", err.message());
    let err = admin.drain_worker(with("adm", drain)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "the admin token passes");
    // The same over HTTP: 403 for the read token.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "--cacert"])
        .arg(pki.path("ca.pem"))
        .args(["-H", "authorization: Bearer ro", "-w", "\n%{http_code}"])
        .arg(format!("{}/api/admin/workers/x/drain", https(&c)))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.ends_with("403") && out.contains("needs the admin scope"), "{out}");
    c.stop().await;
}
