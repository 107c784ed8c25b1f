//! The `cutover` command line (SPEC §3): parsing and dispatch only.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    }
}
