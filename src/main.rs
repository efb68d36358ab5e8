//! The `edgebus` command line. Logic lives in the library; this file only parses arguments,
//! sets up logging and maps results to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgebus::config::{Config, ConfigError, DEFAULT_PATH};
use tracing_subscriber::filter::Targets;

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
    /// Run the gateway (SIGTERM/SIGINT: graceful stop; SIGHUP: reload the device map).
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
    /// Bluetooth LE tools.
    Ble {
        #[command(subcommand)]
        command: BleCommand,
    },
}

#[derive(Subcommand)]
enum BleCommand {
    /// List what is heard nearby, decoded, to help write the device map.
    Scan {
        /// Take the adapter and bind keys from this device map.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Adapter name, e.g. hci0 (default: the first).
        #[arg(long)]
        adapter: Option<String>,
        /// How long to listen.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Read adverts from a replay file (`MAC RSSI HEX` lines) instead of the radio.
        #[arg(long)]
        replay: Option<PathBuf>,
        /// Also append every advert heard to this replay file.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Print every advert, not only new and changed ones.
        #[arg(long)]
        all: bool,
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

/// glibc gives every thread that allocates its own arena (up to 8 per core), each keeping
/// freed memory for itself; on a Pi that is megabytes of RSS for nothing. Two are plenty for
/// a gateway whose threads mostly wait.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => report(run(config)),
        Command::Buffer {
            command: BufferCommand::Stats { config },
        } => report(buffer_stats(&config)),
        Command::Ble {
            command:
                BleCommand::Scan {
                    config,
                    adapter,
                    duration,
                    replay,
                    record,
                    all,
                },
        } => report(ble_scan(config, adapter, duration, replay, record, all)),
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

fn check(file: &Path) -> ExitCode {
    match Config::load(file).map(|cfg| (edgebus::sources::build_all(&cfg), cfg)) {
        Ok((Ok(built), cfg)) => {
            print!("{}", edgebus::summary::summary(&cfg, &built));
            ExitCode::SUCCESS
        }
        Ok((Err(_), _)) => {
            eprintln!("{}: invalid", file.display());
            ExitCode::FAILURE
        }
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

/// Logs to journald when started by systemd (structured fields survive), else to stderr:
/// coloured on a terminal, plain otherwise. `RUST_LOG` overrides the level (default info):
/// a level and `target=level` pairs, e.g. `RUST_LOG=info,edgebus::mqttsn=debug`. (The
/// `Targets` filter, not `EnvFilter`: span and field filters would pull a full regex engine
/// into the binary.)
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, unusable) = log_filter(rust_log.as_deref());
    let registry = tracing_subscriber::registry().with(filter);
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(tracing_journald::layer)
        .and_then(Result::ok);
    if let Some(journald) = journald {
        registry
            .with(journald.with_syslog_identifier("edgebus".into()))
            .init();
    } else {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(tty)
                    .with_target(false),
            )
            .init();
    }
    if let Some(e) = unusable {
        tracing::warn!(rust_log = rust_log.as_deref().unwrap_or(""), error = %e, "RUST_LOG is not usable; logging at info");
    }
}

/// The log filter for a `RUST_LOG` value (`info` when unset, empty or unusable, with the
/// reason).
fn log_filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(tracing::Level::INFO);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (default(), None),
        Some(spec) => match spec.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(edgebus::pipeline::run(config))?;
    Ok(())
}

fn buffer_stats(file: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(file).with_context(|| format!("loading {}", file.display()))?;
    let s = edgebus::outbox::stats_from_file(&cfg.gateway.data_dir)
        .with_context(|| format!("reading the outbox in {}", cfg.gateway.data_dir.display()))?;
    let age = s
        .oldest_age
        .map(|a| {
            humantime::format_duration(std::time::Duration::from_secs(a.as_secs())).to_string()
        })
        .unwrap_or_else(|| "-".into());
    println!("depth: {}", s.depth);
    println!("bytes: {}", s.bytes);
    println!("oldest_age: {age}");
    println!("on_disk: {}", s.on_disk);
    println!(
        "dropped: {} (max_bytes {}, max_age {})",
        s.dropped, s.dropped_max_bytes, s.dropped_max_age
    );
    println!("next_seq: {}", s.next_seq);
    Ok(())
}

fn ble_scan(
    config: Option<PathBuf>,
    adapter: Option<String>,
    duration: std::time::Duration,
    replay: Option<PathBuf>,
    record: Option<PathBuf>,
    all: bool,
) -> anyhow::Result<()> {
    use edgebus::sources::ble::scan::{ScanOptions, scan_and_print};
    let mut opts = match &config {
        Some(file) => {
            let cfg = Config::load(file).with_context(|| format!("loading {}", file.display()))?;
            ScanOptions::from_config(&cfg, duration)
        }
        None => ScanOptions {
            duration,
            ..Default::default()
        },
    };
    if adapter.is_some() {
        opts.adapter = adapter;
    }
    opts.replay = replay.or(opts.replay);
    opts.record = record;
    opts.all = all;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let n = runtime.block_on(async { scan_and_print(opts, &mut std::io::stdout()).await })?;
    eprintln!("{n} device{} heard", if n == 1 { "" } else { "s" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn rust_log_sets_levels_per_target() {
        let (t, bad) = log_filter(Some("warn,edgebus::mqttsn=debug"));
        assert!(bad.is_none());
        assert!(t.would_enable("edgebus::mqttsn::gateway", &Level::DEBUG));
        assert!(!t.would_enable("edgebus::outbox", &Level::INFO));
        assert!(t.would_enable("rumqttc", &Level::WARN));
    }

    #[test]
    fn unset_empty_or_unusable_means_info() {
        for v in [None, Some(""), Some("  "), Some("edgebus=loud")] {
            let (t, bad) = log_filter(v);
            assert_eq!(t.default_level(), Some(LevelFilter::INFO), "{v:?}");
            assert_eq!(bad.is_some(), v == Some("edgebus=loud"), "{v:?}");
        }
    }
}
