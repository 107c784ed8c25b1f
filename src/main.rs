//! The `cutover` command line (SPEC §3): parsing and dispatch only.

mod cli;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "L4 load balancer with DNS-based in-packet service version tagging"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance in the foreground; SIGTERM or SIGINT stops it.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file; errors name file:line:column.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the data path over a capture: forwarded packets and ICMP
    /// replies go to OUTPUT; prints packets per service/version/VIP and
    /// drops per reason.
    Replay {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show services, versions, VIPs, states, backends and active flows.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a new version of SERVICE with these backends behind a new
    /// VIP; the current version drains.
    Rollout {
        service: String,
        /// The new version's backends, comma-separated or repeated.
        #[arg(
            long,
            required = true,
            value_delimiter = ',',
            value_name = "ADDR[,ADDR...]"
        )]
        backends: Vec<IpAddr>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the new version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the newest draining version of SERVICE active again.
    Rollback {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the running appliance's configuration file and apply it.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the reload report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach the admin API of a running appliance.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API: http://HOST:PORT or unix:/PATH.
    #[arg(long, value_name = "URL", default_value = cli::DEFAULT_ADMIN)]
    admin: String,
    /// A file holding the bearer token (default: $CUTOVER_TOKEN, if set).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn client(&self) -> Result<cli::Client, cli::CliError> {
        cli::Client::new(&self.admin, self.token_file.as_deref())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = cutover::control::config::load(&config)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            cutover::run::run(&cfg, &config, stop)?;
            Ok(())
        }
        Command::Check { config } => {
            let cfg = cutover::control::config::load(&config)?;
            println!(
                "{}: ok ({} services, {} pools)",
                config.display(),
                cfg.services.len(),
                cfg.pools.len()
            );
            Ok(())
        }
        Command::Replay {
            config,
            input,
            output,
            json,
        } => {
            let cfg = cutover::control::config::load(&config)?;
            let report = cutover::replay::run(&cfg, &input, &output)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
            Ok(())
        }
        Command::Status { admin, json } => {
            print!("{}", cli::status(&admin.client()?, json)?);
            Ok(())
        }
        Command::Rollout {
            service,
            backends,
            admin,
            json,
        } => {
            print!(
                "{}",
                cli::rollout(&admin.client()?, &service, &backends, json)?
            );
            Ok(())
        }
        Command::Rollback {
            service,
            admin,
            json,
        } => {
            print!("{}", cli::rollback(&admin.client()?, &service, json)?);
            Ok(())
        }
        Command::Reload { admin, json } => {
            print!("{}", cli::reload(&admin.client()?, json)?);
            Ok(())
        }
    }
}
