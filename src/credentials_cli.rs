//! `edgeplane revoke`, `edgeplane token create|list|revoke` (over the
//! Admin API, like `edgeplane drain`) and `edgeplane ca init|admin|server`
//! (files only: a CA, and certificates signed by it).

use crate::admin_cli::{client, with_auth, AdminTarget, CliError};
use crate::proto::{
    CreateJoinTokenRequest, JoinToken, ListJoinTokensRequest, RevokeJoinTokenRequest, RevokeWorkerRequest,
};
use crate::tls::{files, ClusterCa};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Worker id, or name when unique.
    pub worker: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Makes a join token and prints it (the only time it is shown).
    Create {
        #[command(flatten)]
        target: AdminTarget,
        /// How long the token may be used; unset: no expiry.
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Option<Duration>,
        /// Glob the joining worker's name must match (`gpu-box-*`).
        #[arg(long = "name-pattern", default_value = "")]
        name_pattern: String,
        /// Joins allowed; unset: unlimited.
        #[arg(long)]
        uses: Option<u32>,
    },
    /// Lists join tokens (never their secrets).
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Revokes a join token by its id.
    Revoke {
        #[command(flatten)]
        target: AdminTarget,
        id: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaCommand {
    /// Makes a cluster CA (DIR/ca.pem, DIR/ca-key.pem, the key 0600) and a
    /// server certificate signed by it (DIR/server.pem, DIR/server-key.pem).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Names and addresses the server certificate is for.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
    /// A client certificate with the admin role, signed by the CA in DIR.
    Admin {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "admin")]
        name: String,
        #[arg(long, default_value = "30d", value_parser = crate::duration::parse_duration)]
        lifetime: Duration,
    },
}

pub async fn revoke(args: &RevokeArgs) -> Result<String, CliError> {
    let (mut c, auth) = client(&args.target).await?;
    let r = c
        .revoke_worker(with_auth(
            RevokeWorkerRequest {
                worker: args.worker.clone(),
            },
            &auth,
        ))
        .await?
        .into_inner();
    let closed = if r.session_closed {
        "; its session was closed"
    } else {
        ""
    };
    Ok(format!("revoked {}{closed}\n", r.worker_id))
}

pub async fn token(args: &TokenArgs) -> Result<String, CliError> {
    match &args.command {
        TokenCommand::Create {
            target,
            ttl,
            name_pattern,
            uses,
        } => {
            let (mut c, auth) = client(target).await?;
            let req = CreateJoinTokenRequest {
                ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
                name_pattern: name_pattern.clone(),
                uses: uses.unwrap_or(0),
            };
            let r = c.create_join_token(with_auth(req, &auth)).await?.into_inner();
            Ok(format!("{}\n", r.secret))
        }
        TokenCommand::List { target } => {
            let (mut c, auth) = client(target).await?;
            let r = c
                .list_join_tokens(with_auth(ListJoinTokensRequest {}, &auth))
                .await?
                .into_inner();
            let mut out = String::from("ID      PATTERN               USES LEFT  EXPIRES              STATE\n");
            for t in &r.tokens {
                let _ = writeln!(out, "{}", row(t));
            }
            Ok(out)
        }
        TokenCommand::Revoke { target, id } => {
            let (mut c, auth) = client(target).await?;
            let t = c
                .revoke_join_token(with_auth(RevokeJoinTokenRequest { id: id.clone() }, &auth))
                .await?
                .into_inner();
            Ok(format!("revoked join token {}\n", t.id))
        }
    }
}

fn row(t: &JoinToken) -> String {
    let uses = if t.uses_limited {
        t.uses_left.to_string()
    } else {
        "unlimited".into()
    };
    let expires = t.expires_at.as_ref().map_or("never".to_string(), |ts| {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(ts.seconds.max(0) as u64);
        humantime::format_rfc3339_seconds(at).to_string()
    });
    let pattern = if t.name_pattern.is_empty() {
        "*"
    } else {
        &t.name_pattern
    };
    let state = if t.revoked { "revoked" } else { "active" };
    format!("{:<7} {:<21} {:<10} {:<20} {state}", t.id, pattern, uses, expires)
}

#[derive(Debug, thiserror::Error)]
pub enum CaCliError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0} exists; not overwriting a CA")]
    Exists(PathBuf),
}

pub fn ca(args: &CaArgs) -> Result<String, CaCliError> {
    match &args.command {
        CaCommand::Init { dir, hosts } => {
            let ca_path = dir.join(crate::tls::ca::CA_CERT_FILE);
            if ca_path.exists() {
                return Err(CaCliError::Exists(ca_path));
            }
            let ca = ClusterCa::load_or_create(dir)?;
            let server = ca.issue_server(hosts, Duration::from_secs(365 * 24 * 3600))?;
            files::write_private(&dir.join("server-key.pem"), server.key_pem.as_bytes())?;
            files::write_public(&dir.join("server.pem"), server.cert_pem.as_bytes())?;
            Ok(format!(
                "wrote {d}/ca.pem, {d}/ca-key.pem (0600), {d}/server.pem, {d}/server-key.pem (0600) for {}\n",
                hosts.join(", "),
                d = dir.display()
            ))
        }
        CaCommand::Admin { dir, name, lifetime } => {
            let ca = ClusterCa::load(
                &dir.join(crate::tls::ca::CA_CERT_FILE),
                &dir.join(crate::tls::ca::CA_KEY_FILE),
            )?;
            let cert = ca.issue_admin(name, *lifetime)?;
            files::write_private(&dir.join("admin-key.pem"), cert.key_pem.as_bytes())?;
            files::write_public(&dir.join("admin.pem"), cert.cert_pem.as_bytes())?;
            Ok(format!(
                "wrote {d}/admin.pem and {d}/admin-key.pem (0600): admin `{name}`\n",
                d = dir.display()
            ))
        }
    }
}
