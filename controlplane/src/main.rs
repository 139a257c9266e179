//! `octoisp-controlplane`: the server (`serve`) and its administration commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use octoisp_controlplane::config::Config;
use octoisp_controlplane::{backup, ca, db, registry, serve, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc, as in the agent: serving a device page is mostly short-lived allocations
/// (rows, JSON), and glibc's malloc/free/consolidate took about 13 % of the API's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration or command line (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "octoisp-controlplane",
    version,
    about = "OctoISP control plane"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables OCTOISP_CP__SECTION__KEY override it.
    #[arg(long, short, global = true, env = "OCTOISP_CP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Roles of this instance: any of api, ingest, workers, comma-separated.
        #[arg(long, default_value = "api,ingest,workers")]
        roles: String,
    },
    /// Apply the database migrations (with database.admin_url).
    Migrate,
    /// Check the configuration and print it (passwords hidden).
    CheckConfig,
    /// Providers (tenants).
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// POPs and agent enrollment.
    #[command(subcommand)]
    Pop(PopCmd),
    /// Agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// The control plane CA.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Back up the database (pg_dump, custom format) with database.admin_url, which must not be bound by
    /// row-level security (a superuser or a BYPASSRLS role).
    Backup {
        /// File or directory to write (default: <data_dir>/backups/octoisp-<UTC time>.dump).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Include metric samples (left out by default: large, and usually covered by storage snapshots).
        #[arg(long)]
        with_metrics: bool,
        /// After success, keep only the newest N backups of that directory (0: keep all).
        #[arg(long, default_value_t = 0)]
        keep: usize,
    },
    /// Print the API's OpenAPI document (JSON), or with --markdown the reference kept in docs/API.md.
    Openapi {
        /// Print the Markdown reference instead of the JSON document.
        #[arg(long)]
        markdown: bool,
    },
    /// Restore a backup into an EMPTY database, apply newer migrations and verify the audit chains.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: std::path::PathBuf,
        /// Admin URL of the empty target database (default: database.admin_url).
        #[arg(long)]
        target_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user (audited). The password is read from $OCTOISP_USER_PASSWORD or the first line of stdin.
    Create {
        /// Provider slug or id; omit for a Global Admin.
        #[arg(long)]
        provider: Option<String>,
        /// Email address (unique, case-insensitive).
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Role name: Global Admin (no provider), Provider Admin, NOC, Technician, Viewer, or a custom role.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Recompute the hash chains and report the first broken link (exit 1 if any).
    Verify {
        /// Provider slug or id; omit for every chain.
        #[arg(long)]
        provider: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ProviderCmd {
    /// Create a provider.
    Create {
        /// Short unique name, used on the command line.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Tier: small, medium or large.
        #[arg(long, default_value = "small")]
        tier: String,
    },
}

#[derive(Debug, Subcommand)]
enum PopCmd {
    /// Create a POP of a provider.
    Create {
        /// Provider slug or id.
        #[arg(long)]
        provider: String,
        /// Short name, unique within the provider.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Print a one-time enrollment token for an agent of this POP.
    EnrollToken {
        /// Provider slug or id.
        #[arg(long)]
        provider: String,
        /// POP slug or id.
        #[arg(long)]
        pop: String,
        /// Lifetime in seconds (default: ingest.token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Revoke an agent: its certificate is refused from now on.
    Revoke {
        /// Agent id.
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum CaCmd {
    /// Create the CA if missing and print its SHA-256 fingerprint.
    Init,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("octoisp-controlplane: bad configuration: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init_logs(&cfg.log);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("octoisp-controlplane: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, cfg)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("octoisp-controlplane: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn pool(cfg: &Config) -> anyhow::Result<sqlx::PgPool> {
    db::connect(&cfg.database.url, 2).await.with_context(|| {
        format!(
            "cannot connect to {}",
            octoisp_controlplane::config::redact(&cfg.database.url)
        )
    })
}

/// The id of provider `slug_or_id`, if given.
async fn provider_id(
    pool: &sqlx::PgPool,
    slug_or_id: Option<&str>,
) -> anyhow::Result<Option<uuid::Uuid>> {
    let Some(key) = slug_or_id else {
        return Ok(None);
    };
    let provider = registry::find_provider(pool, key)
        .await?
        .with_context(|| format!("no provider `{key}`"))?;
    Ok(Some(provider.id))
}

async fn dispatch(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { roles } => {
            let roles = match serve::parse_roles(&roles) {
                Ok(r) => r,
                Err(err) => {
                    eprintln!("octoisp-controlplane: --roles: {err}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            let metrics = telemetry::init_metrics()?;
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone());
            serve::run(cfg, roles, metrics, shutdown).await?;
        }
        Command::Openapi { markdown } => {
            if markdown {
                print!("{}", octoisp_controlplane::api::reference_markdown());
            } else {
                let json = octoisp_controlplane::api::openapi()
                    .to_pretty_json()
                    .context("cannot render the OpenAPI document")?;
                println!("{json}");
            }
        }
        Command::Migrate => {
            let admin = db::connect(cfg.admin_url(), 2).await.with_context(|| {
                format!(
                    "cannot connect to {}",
                    octoisp_controlplane::config::redact(cfg.admin_url())
                )
            })?;
            db::migrate(&admin).await?;
            println!("migrations applied");
        }
        Command::CheckConfig => println!("configuration OK: {cfg:#?}"),
        Command::Provider(ProviderCmd::Create { slug, name, tier }) => {
            let pool = pool(&cfg).await?;
            let id = registry::create_provider(&pool, &slug, &name, &tier).await?;
            println!("{id}");
        }
        Command::Pop(PopCmd::Create {
            provider,
            slug,
            name,
        }) => {
            let pool = pool(&cfg).await?;
            let id = registry::create_pop(&pool, &provider, &slug, &name).await?;
            println!("{id}");
        }
        Command::Pop(PopCmd::EnrollToken {
            provider,
            pop,
            ttl_secs,
        }) => {
            let ca = ca::Ca::load_or_create(&cfg.data_dir).context("cannot load the CA")?;
            let ttl = Duration::from_secs(ttl_secs.unwrap_or(cfg.ingest.token_ttl_secs));
            let pool = pool(&cfg).await?;
            let issued = registry::create_enrollment_token(&pool, &provider, &pop, ttl).await?;
            let token = ca::EnrollmentToken {
                token_id: issued.token_id,
                secret: issued.secret,
                ca_fingerprint: ca.fingerprint_hex(),
            };
            println!("{token}");
        }
        Command::Agent(AgentCmd::Revoke { id }) => {
            let pool = pool(&cfg).await?;
            if registry::revoke_agent(&pool, id).await? {
                println!("agent {id} revoked");
            } else {
                eprintln!("octoisp-controlplane: no agent {id}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::User(UserCmd::Create {
            provider,
            email,
            name,
            role,
        }) => {
            let pool = pool(&cfg).await?;
            let provider = provider_id(&pool, provider.as_deref()).await?;
            let password = match std::env::var("OCTOISP_USER_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the password")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let id = octoisp_controlplane::auth::admin::create_user_cli(
                &pool,
                octoisp_controlplane::auth::PasswordParams::default(),
                provider,
                &email,
                &name,
                &password,
                &role,
            )
            .await
            .map_err(|err| anyhow::anyhow!("cannot create the user: {err}"))?;
            println!("{id}");
        }
        Command::Audit(AuditCmd::Verify { provider }) => {
            let pool = pool(&cfg).await?;
            let provider = provider_id(&pool, provider.as_deref()).await?;
            let report = octoisp_controlplane::audit::verify(&pool, provider).await?;
            println!(
                "{} rows in {} chains checked",
                report.rows_checked, report.chains
            );
            if let Some((id, reason)) = report.first_broken {
                println!("first broken link: audit_log row {id}: {reason}");
                return Ok(ExitCode::FAILURE);
            }
            println!("every chain verifies");
        }
        Command::Backup {
            out,
            with_metrics,
            keep,
        } => {
            let path = backup::backup_path(out.as_deref(), &cfg.data_dir);
            let report = backup::backup(cfg.admin_url(), &path, with_metrics, keep).await?;
            println!(
                "backup written: {} ({} bytes, {} tables with data{})",
                report.path.display(),
                report.bytes,
                report.tables,
                if with_metrics {
                    ""
                } else {
                    ", metric samples left out"
                }
            );
            for old in report.rotated {
                println!("deleted old backup {}", old.display());
            }
        }
        Command::Restore { from, target_url } => {
            let target = target_url.as_deref().unwrap_or(cfg.admin_url());
            let report = backup::restore(&from, target).await?;
            for (table, rows) in &report.rows {
                println!("{table:<32} {rows:>12}");
            }
            println!(
                "restored; {} audit rows in {} chains verify",
                report.audit_rows, report.audit_chains
            );
        }
        Command::Ca(CaCmd::Init) => {
            let ca = ca::Ca::load_or_create(&cfg.data_dir).context("cannot create the CA")?;
            println!("{}", ca.fingerprint_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "Cannot watch SIGTERM.");
                let _ = ctrl_c.await;
            }
        }
        token.cancel();
    });
}
