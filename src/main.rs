//! The `edgebus` command line. Logic lives in the library; this file only parses arguments,
//! sets up logging and maps results to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgebus::config::{Config, ConfigError, DEFAULT_PATH};

#[derive(Parser)]
#[command(
    name = "edgebus",
    version,
    about = "Edge gateway: field devices to MQTT, with a durable outbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(short, long, default_value = DEFAULT_PATH, env = "EDGEBUS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a device map; print every problem as FILE:LINE:COL, or a summary.
    Check {
        #[arg(short, long, default_value = DEFAULT_PATH, env = "EDGEBUS_CONFIG")]
        config: PathBuf,
    },
    /// Inspect the store-and-forward buffer.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Depth, bytes, oldest age and drop counters of the outbox (works while the gateway runs).
    Stats {
        #[arg(short, long, default_value = DEFAULT_PATH, env = "EDGEBUS_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => report(run(&config)),
        Command::Buffer {
            command: BufferCommand::Stats { config },
        } => report(buffer_stats(&config)),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgebus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(cfg) => match edgebus::sources::build_all(&cfg) {
            Ok(built) => {
                print!("{}", edgebus::summary::summary(&cfg, &built));
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("{}: invalid", file.display());
                ExitCode::FAILURE
            }
        },
        Err(ConfigError::Invalid(lines)) => {
            for l in &lines {
                eprintln!("{l}");
            }
            eprintln!(
                "{} problem{} found",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(file: &std::path::Path) -> anyhow::Result<()> {
    let _ = Config::load(file)?;
    anyhow::bail!("not wired yet")
}

fn buffer_stats(file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(file).with_context(|| format!("loading {}", file.display()))?;
    let _ = cfg;
    Ok(())
}
