//! The `edgeplane` binary: one executable, a subcommand per role.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use edgeplane::{admin_cli, bench, coordinator, credentials_cli, demo, sample, views_cli, watch_table, worker};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "edgeplane", version, about = "Control plane for a fleet of edge machines")]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Runtime threads: 1 runs everything on one thread (an event loop like
    /// nginx's single worker, with no hand-offs between threads); unset uses
    /// one per CPU this process may run on.
    #[arg(long, global = true, env = "EDGEPLANE_THREADS")]
    threads: Option<usize>,

    /// Log lines on stderr: `text` for people, or `json`, one object a line
    /// with the event's fields (worker, worker_id, service, from, to,
    /// reason...) at the top level, for log shippers and `jq`.
    #[arg(long, global = true, env = "EDGEPLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The tokio runtime `--threads` asks for.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(0) => Err(std::io::Error::other("--threads must be at least 1")),
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator (gRPC and HTTP on one port).
    Coordinator(Box<coordinator::CoordinatorConfig>),
    /// Run a worker agent that dials the coordinator.
    Worker(worker::WorkerConfig),
    /// List the fleet's workers (`--watch`: a live table).
    Workers(admin_cli::WorkersArgs),
    /// List the services: catalog entries and what workers declare, with providers.
    Services(views_cli::ServicesArgs),
    /// Services short of ready replicas, most urgent first.
    Gaps(views_cli::GapsArgs),
    /// Drain a worker: it keeps its stream but takes no new work.
    Drain(admin_cli::DrainArgs),
    /// Revokes a worker: closes its session now and refuses its certificate.
    Revoke(credentials_cli::RevokeArgs),
    /// Join tokens: create (printed once), list, revoke.
    Token(credentials_cli::TokenArgs),
    /// A cluster CA and certificates signed by it (files only).
    Ca(credentials_cli::CaArgs),
    /// A coordinator and a local worker running sample services: a fleet in one command.
    Demo(demo::DemoArgs),
    /// A stand-in model service: ready after --load-time, serves POST /convert and notes.v1.Notes.
    SampleService(sample::SampleConfig),
    /// Measure the coordinator under a simulated fleet (and etcd beside it).
    Bench(bench::BenchArgs),
    /// Check a server's gRPC health (grpc.health.v1): exit 0 when SERVING. For container healthchecks.
    Health(HealthArgs),
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The server to ask.
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// The service whose health to check (`""`: the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for an answer.
    #[arg(long, default_value = "2s", value_parser = edgeplane::duration::parse_duration)]
    timeout: std::time::Duration,
}

/// The log filter a subcommand starts with; `RUST_LOG` overrides it.
fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Coordinator(_) | Command::Worker(_) | Command::SampleService(_) => {
            "info,h2=warn,tower=warn,hyper=warn"
        }
        // The demo and the operator's commands print their answer on
        // stdout; their log carries only trouble.
        _ => "warn",
    }
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` or else `default`.
/// JSON lines carry the event's fields at the top level (not under
/// `fields`), so `jq 'select(.worker == "gpu-box")'` works as it reads.
fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
}

/// Cancels the token on SIGINT or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("signal received; shutting down");
        t.cancel();
    });
    token
}

/// With `--features mimalloc`: glibc's malloc and free are 17% of the
/// coordinator's instructions per proxied request, mimalloc's a third of
/// that; but a fleet of connected workers then costs about 44% more memory
/// (BENCHMARKS.md), so the system allocator stays the default.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connections the kernel queues before they are accepted. A fleet that
/// reconnects at once (after a coordinator restart) overflows the default of
/// 1024 and retries on SYN timeouts; 4096 measured 5.1 s -> 3.6 s to
/// re-converge 10,000 workers (BENCHMARKS.md).
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The coordinator's unset timings follow the ones given (one timeout
    // set alone must work); only the matches say which were given.
    if let (Command::Coordinator(cfg), Some(("coordinator", sub))) = (&mut cli.command, matches.subcommand()) {
        cfg.derive_unset_timeouts(sub);
    }
    let log_format = cli.log_format;
    init_tracing(log_format, default_log_filter(&cli.command));
    let result = runtime(cli.threads)
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        // With JSON logs, stderr stays JSON to the last line.
        Err(e) if log_format == LogFormat::Json => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::exit(1)
        }
        r => r,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Coordinator(cfg) => {
            let listen = cfg.listen;
            let c = coordinator::Coordinator::new(*cfg)?;
            let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
            c.serve(listener, shutdown_on_signals()).await?;
        }
        Command::Worker(cfg) => {
            let shutdown = shutdown_on_signals();
            let agent = worker::spawn(cfg, shutdown)?;
            agent.join().await;
        }
        Command::Demo(args) => demo::run(args, shutdown_on_signals()).await?,
        Command::SampleService(cfg) => sample::run(cfg, shutdown_on_signals()).await?,
        Command::Workers(args) if args.watch => {
            watch_table::run(&args, std::io::stdout(), shutdown_on_signals()).await?;
        }
        Command::Workers(args) => print!("{}", admin_cli::workers(&args).await?),
        Command::Services(args) => print!("{}", views_cli::services(&args).await?),
        Command::Gaps(args) => print!("{}", views_cli::gaps(&args).await?),
        Command::Drain(args) => print!("{}", admin_cli::drain(&args).await?),
        Command::Revoke(args) => print!("{}", credentials_cli::revoke(&args).await?),
        Command::Token(args) => print!("{}", credentials_cli::token(&args).await?),
        Command::Ca(args) => print!("{}", credentials_cli::ca(&args)?),
        Command::Bench(args) => bench::run(&args).await?,
        Command::Health(args) => {
            let url = edgeplane::parse::normalize_url(&args.coordinator);
            match worker::grpc_health(&url, &args.service, args.timeout).await {
                Ok(()) => println!("SERVING"),
                Err(why) => {
                    println!("{why}");
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}
