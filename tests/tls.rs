//! A TLS coordinator against the real clients operators use: curl with
//! `--cacert`, grpcurl with `-cacert` (and an admin certificate), Python
//! grpcio over `ssl_channel_credentials`; a plaintext client on the TLS
//! port gets a clear error and the coordinator serves on.

mod common;

use common::tls::{https, Pki};
use common::{within, TestCoordinator, PATIENCE};
use std::time::Duration;
use tokio::process::Command;

async fn run(cmd: &mut Command) -> (bool, String) {
    let out = within(cmd.output()).await.expect("the client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The subject of the certificate served at `url` (curl -v's `subject:`
/// line), trusting `ca`; `None` when curl shows none (nothing served yet).
async fn served_subject(ca: &std::path::Path, url: &str) -> Option<String> {
    let (_, out) = run(Command::new("curl")
        .arg("-sS")
        .arg("-v")
        .arg("--cacert")
        .arg(ca)
        .arg(url))
    .await;
    out.lines().find(|l| l.contains("subject:")).map(str::to_string)
}

fn grpcurl() -> Command {
    Command::new("grpcurl")
}

#[tokio::test]
async fn curl_grpcurl_and_grpcio_speak_tls_and_plaintext_is_refused() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.admin_token = Some("adm".into());
    let c = TestCoordinator::start(config).await;
    let url = https(&c);
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let host = format!("127.0.0.1:{}", c.addr.port());

    // curl over TLS, HTTP/1.1 and HTTP/2 (ALPN).
    for version in ["--http1.1", "--http2"] {
        let (ok, out) = run(Command::new("curl").args([
            "-sS",
            version,
            "--cacert",
            ca,
            "-H",
            "authorization: Bearer adm",
            &format!("{url}/api/admin/workers"),
        ]))
        .await;
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "[]", "{version}");
    }

    // Plaintext HTTP on the TLS port: 400 and the reason, as JSON.
    let (_, out) =
        run(Command::new("curl").args(["-sS", "-w", "\n%{http_code}", &format!("http://{host}/health")])).await;
    assert!(out.contains("tls_required") && out.ends_with("400"), "{out}");

    // grpcurl: reflection lists the services; ListWorkers with an admin
    // certificate and no token; refused with neither.
    let (ok, out) = run(grpcurl().args(["-cacert", ca, &host, "list"])).await;
    assert!(
        ok && out.contains("edgeplane.v1.Admin") && out.contains("edgeplane.v1.Enrollment"),
        "{out}"
    );
    let (cert, key) = (pki.path("admin.pem"), pki.path("admin-key.pem"));
    let (ok, out) = run(grpcurl().args([
        "-cacert",
        ca,
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        &host,
        "edgeplane.v1.Admin/ListWorkers",
    ]))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run(grpcurl().args(["-cacert", ca, &host, "edgeplane.v1.Admin/ListWorkers"])).await;
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    // A plaintext gRPC client is told, in a GOAWAY, what the port speaks.
    // (grpc-go may keep redialing a channel that keeps being refused, so
    // the call gets a deadline.)
    let (ok, out) = run(grpcurl().args(["-plaintext", "-max-time", "5", &host, "list"])).await;
    assert!(!ok, "{out}");

    // Python grpcio: grpc.health.v1 over ssl_channel_credentials.
    let script = format!(
        r#"
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
creds = grpc.ssl_channel_credentials(open({ca:?}, "rb").read())
with grpc.secure_channel({host:?}, creds) as ch:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
"#
    );
    let (ok, out) = run(Command::new("python3").args(["-c", &script])).await;
    assert!(ok && out.trim() == "SERVING", "{out}");

    // Unharmed by all of it.
    let (ok, out) = run(Command::new("curl").args(["-sS", "--cacert", ca, &format!("{url}/health")])).await;
    assert!(ok && out.contains("\"status\""), "{out}");
    c.stop().await;
}

/// A worker joins over TLS and serves `notes`; curl `--cacert` reaches
/// `/service/notes/convert` through the direct path and the tunnel.
#[tokio::test]
async fn the_proxy_answers_over_tls_through_both_data_paths() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let sample = edgeplane::sample::SampleConfig {
        port: 0,
        load_time: Duration::ZERO,
        name: "notes-coa".into(),
        bind: "127.0.0.1".parse().unwrap(),
        tls_cert: None,
        tls_key: None,
    };
    tokio::spawn(edgeplane::sample::serve(listener, sample, stop.clone()));
    let ca = pki.path("ca.pem");
    for path in ["direct", "tunnel"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = c.worker_config(&format!("notes-{path}"), dir.path());
        // Over TLS, with the certificate this worker got at join.
        cfg.coordinator = https(&c);
        cfg.ca_cert = Some(ca.clone());
        cfg.services = vec![("notes".into(), backend.clone())];
        cfg.data_path = path.parse().unwrap();
        cfg.probe_interval = Duration::from_millis(50);
        let name = format!("notes-{path}");
        let (agent, agent_stop) = common::start_agent(cfg).await;
        let mut watch = common::tls::admin_watch(&c, &pki).await;
        watch
            .until_service(Some(&name), Some("notes-coa"), edgeplane::proto::ServiceState::Ready)
            .await;
        let (ok, out) = run(Command::new("curl").args([
            "-sS",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "content-type: application/json",
            "-d",
            r##"{"notes":"# hi","client_name":"tls-test"}"##,
            &format!("{}/service/notes/convert", https(&c)),
        ]))
        .await;
        assert!(ok && out.contains("tls-test"), "{path}: {out}");
        agent_stop.cancel();
        tokio::time::timeout(PATIENCE, agent.join()).await.unwrap();
    }
    stop.cancel();
    c.stop().await;
}

/// A new certificate written over the served one is served to the next
/// handshake, without a restart and without dropping an open connection.
#[tokio::test]
async fn the_server_certificate_is_reloaded_when_its_files_change() {
    let pki = Pki::new();
    let c = TestCoordinator::start(pki.config()).await;
    let ca = pki.path("ca.pem");
    let url = format!("{}/health", https(&c));
    let subject = || async { served_subject(&ca, &url).await.expect("curl -v shows the subject") };
    assert!(subject().await.contains("CN=127.0.0.1"));
    let open = common::tls::channel(&c, &pki.client(None)).await.unwrap();
    let fresh = pki
        .ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    std::fs::write(pki.path("server-key.pem"), &fresh.key_pem).unwrap();
    std::fs::write(pki.path("server.pem"), &fresh.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !subject().await.contains("CN=localhost") {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate is served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection made before the change still answers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(open);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("the old connection is kept");
    c.stop().await;
}

/// SIGHUP to a running `edgeplane coordinator` reloads its certificate.
/// The new files keep the old modification times, so the change-polling
/// does not see them: only the signal can have loaded them.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_coordinator() {
    let pki = Pki::new();
    let port = common::free_port();
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .arg("coordinator")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server-key.pem"))
        .arg("--ca-cert")
        .arg(pki.path("ca.pem"))
        .arg("--ca-key")
        .arg(pki.path("ca-key.pem"))
        .arg("--state-dir")
        .arg(pki.path("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ca = pki.path("ca.pem");
    let url = format!("https://127.0.0.1:{port}/health");
    let subject = || served_subject(&ca, &url);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match subject().await {
            Some(s) if s.contains("CN=127.0.0.1") => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the coordinator serves TLS: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = pki
        .ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    for (file, body) in [("server.pem", &fresh.cert_pem), ("server-key.pem", &fresh.key_pem)] {
        let path = pki.path(file);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, body).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(coordinator.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !subject().await.is_some_and(|s| s.contains("CN=localhost")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP loads the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(coordinator.try_wait().unwrap().is_none(), "SIGHUP does not stop it");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(coordinator.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = within(coordinator.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}
