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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
