//! `jamd`: the jam.togthr control plane in one binary.
//!
//! `jamd` (or `jamd serve`) runs the server; `jamd user add NAME` and
//! `jamd invite` manage accounts on the configured database; `jamd migrate`
//! only brings the database schema up to date.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jam_control_plane::api::{self, InviteRequest};
use jam_control_plane::auth;
use jam_control_plane::config::{FileConfig, LogFormat, Registration};
use jam_control_plane::db::{Db, DbError};
use jam_control_plane::server::{Server, redact};

#[derive(Parser)]
#[command(
    name = "jamd",
    version,
    about = "jam.togthr control plane: accounts, sessions, relay, blob store, dashboard"
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings; each flag also reads `JAMD_<NAME>` and the TOML file.
#[derive(clap::Args)]
struct Opts {
    /// TOML configuration file (keys as the flags, with underscores).
    #[arg(long, env = "JAMD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory: the SQLite database and the blob files [default: ./jamd-data].
    #[arg(long, env = "JAMD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER:PASS@HOST/DB [default: SQLite in the data directory].
    #[arg(long, env = "JAMD_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "JAMD_HTTP_LISTEN", global = true)]
    http_listen: Option<SocketAddr>,
    /// Relay UDP listen address [default: 0.0.0.0:7400].
    #[arg(long, env = "JAMD_RELAY_LISTEN", global = true)]
    relay_listen: Option<SocketAddr>,
    /// Relay address announced to clients, host:port [default: the API's host with the relay port].
    #[arg(long, env = "JAMD_PUBLIC_RELAY_ADDR", global = true)]
    public_relay_addr: Option<String>,
    /// Name of this node [default: node1].
    #[arg(long, env = "JAMD_NODE_NAME", global = true)]
    node_name: Option<String>,
    /// Who may create accounts [default: invite].
    #[arg(long, env = "JAMD_REGISTRATION", global = true)]
    registration: Option<Registration>,
    /// Login token lifetime in seconds [default: 30 days].
    #[arg(long, env = "JAMD_TOKEN_TTL_SECS", global = true)]
    token_ttl_secs: Option<u64>,
    /// Relay ticket lifetime in seconds [default: 12 hours].
    #[arg(long, env = "JAMD_TICKET_TTL_SECS", global = true)]
    ticket_ttl_secs: Option<u64>,
    /// Largest JSON request body in bytes [default: 65536].
    #[arg(long, env = "JAMD_MAX_JSON_BYTES", global = true)]
    max_json_bytes: Option<usize>,
    /// Largest blob upload in bytes [default: 64 MiB].
    #[arg(long, env = "JAMD_MAX_BLOB_BYTES", global = true)]
    max_blob_bytes: Option<u64>,
    /// Relay: sustained packets per second per member [default: 200].
    #[arg(long, env = "JAMD_RELAY_RATE_PPS", global = true)]
    relay_rate_pps: Option<u32>,
    /// Relay: burst of packets per member [default: 400].
    #[arg(long, env = "JAMD_RELAY_BURST_PACKETS", global = true)]
    relay_burst_packets: Option<u32>,
    /// Relay: sustained bytes per second per member [default: 262144].
    #[arg(long, env = "JAMD_RELAY_RATE_BYTES", global = true)]
    relay_rate_bytes: Option<u32>,
    /// Relay: seconds of silence after which a member is forgotten [default: 20].
    #[arg(long, env = "JAMD_KEEPALIVE_TIMEOUT_SECS", global = true)]
    keepalive_timeout_secs: Option<u64>,
    /// Seconds between checks of the relay's live members against the
    /// database [default: 5].
    #[arg(long, env = "JAMD_MEMBERSHIP_SWEEP_SECS", global = true)]
    membership_sweep_secs: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "JAMD_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
}

impl Opts {
    fn file_config(&self) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            http_listen: self.http_listen,
            relay_listen: self.relay_listen,
            public_relay_addr: self.public_relay_addr.clone(),
            node_name: self.node_name.clone(),
            registration: self.registration,
            token_ttl_secs: self.token_ttl_secs,
            ticket_ttl_secs: self.ticket_ttl_secs,
            max_json_bytes: self.max_json_bytes,
            max_blob_bytes: self.max_blob_bytes,
            relay_rate_pps: self.relay_rate_pps,
            relay_burst_packets: self.relay_burst_packets,
            relay_rate_bytes: self.relay_rate_bytes,
            keepalive_timeout_secs: self.keepalive_timeout_secs,
            membership_sweep_secs: self.membership_sweep_secs,
            log_format: self.log_format,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print a new invite code for registration by invite.
    Invite {
        /// How many accounts it may create.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        ttl_secs: i64,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is read from standard input (one
    /// line) with --password-stdin, else generated and printed.
    Add {
        /// Login name.
        username: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jamd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JAMD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut file = match &cli.opts.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    // Relative data directories in the file are relative to the file.
    if let (Some(p), Some(d)) = (&cli.opts.config, &file.data_dir)
        && d.is_relative()
        && let Some(parent) = p.parent()
    {
        file.data_dir = Some(parent.join(d));
    }
    let config = cli.opts.file_config().or(file).resolve();
    init_logs(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                let db = open_db(&config).await?;
                db.close().await;
                println!("database schema is up to date");
                Ok(())
            }
            Command::Invite { uses, ttl_secs } => {
                let db = open_db(&config).await?;
                let req = InviteRequest {
                    uses: Some(uses),
                    ttl_secs: Some(ttl_secs),
                };
                let inv = api::create_invite(&db, None, &req)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{}", inv.code);
                db.close().await;
                Ok(())
            }
            Command::User {
                command:
                    UserCommand::Add {
                        username,
                        admin,
                        password_stdin,
                    },
            } => {
                api::validate_username(&username).map_err(|e| anyhow::anyhow!("{e}"))?;
                let (password, generated) = if password_stdin {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from standard input")?;
                    (line.trim_end_matches(['\r', '\n']).to_string(), false)
                } else {
                    (jam_control_plane::db::random_hex(12), true)
                };
                api::validate_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
                let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
                let db = open_db(&config).await?;
                match db.create_user(&username, &hash, admin).await {
                    Ok(_) => {}
                    Err(DbError::Duplicate) => bail!("user {username:?} exists already"),
                    Err(e) => return Err(e).context("creating the user"),
                }
                db.close().await;
                let role = if admin { "administrator" } else { "user" };
                if generated {
                    println!("created {role} {username} with password {password}");
                } else {
                    println!("created {role} {username}");
                }
                Ok(())
            }
        }
    })
}

async fn open_db(config: &jam_control_plane::config::Config) -> anyhow::Result<Db> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    Db::connect(&config.database_url)
        .await
        .with_context(|| format!("opening database {}", redact(&config.database_url)))
}

async fn serve(config: jam_control_plane::config::Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    eprintln!(
        "jamd: dashboard on http://{}/ · relay on udp {}",
        server.http_addr, server.relay_addr
    );
    if server.state.db.user_count().await.unwrap_or(0) == 0 {
        eprintln!(
            "jamd: no accounts yet; create an administrator with `jamd user add NAME --admin`"
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await
}
