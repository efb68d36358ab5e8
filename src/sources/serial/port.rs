//! The I/O shell around [`Engine`]: opens the port, moves bytes both ways, sleeps until the
//! engine's next deadline, and reopens with backoff when the adapter disappears (USB
//! unplug, hub reset), reporting the devices offline meanwhile.

use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::config::{FlowControl, Parity, SerialBus};
use super::engine::{Action, Engine, SerialStats};
use crate::sources::SourceContext;

/// Writes should take milliseconds; a stuck one means flow control holds the line.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const READ_BUF: usize = 4096;
/// An open port that lasted this long resets the reopen backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot open {port}: {source}")]
    Open {
        port: String,
        source: tokio_serial::Error,
    },
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("port closed (device unplugged?)")]
    Eof,
    #[error("write failed: {0}")]
    Write(std::io::Error),
}

/// Why serving a port ended.
enum End {
    Shutdown,
    Lost(PortError),
}

pub fn open(bus: &SerialBus) -> Result<SerialStream, PortError> {
    let builder = tokio_serial::new(&bus.port, bus.baud)
        .data_bits(match bus.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match bus.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Odd => tokio_serial::Parity::Odd,
            Parity::Even => tokio_serial::Parity::Even,
        })
        .stop_bits(if bus.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match bus.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        });
    let err = |source| PortError::Open {
        port: bus.port.clone(),
        source,
    };
    let mut stream = builder.open_native_async().map_err(err)?;
    if !bus.exclusive {
        stream.set_exclusive(false).map_err(err)?;
    }
    Ok(stream)
}

/// Runs the bus until shutdown: open, serve, and on loss reopen with doubling backoff.
pub async fn run(bus_name: &str, bus: &SerialBus, engine: &mut Engine, ctx: &SourceContext) {
    let mut backoff = bus.reopen_backoff;
    let mut failures = 0u32;
    let mut out = Vec::new();
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match open(bus) {
            Ok(stream) => {
                if failures > 0 {
                    tracing::info!(bus = %bus_name, port = %bus.port, "port is back after {failures} failed attempt(s)");
                } else {
                    tracing::info!(bus = %bus_name, port = %bus.port, baud = bus.baud, "port open");
                }
                failures = 0;
                let opened = Instant::now();
                engine.opened(opened);
                let end = serve(stream, engine, ctx, &mut out).await;
                // A port that fails right after opening (a flaky hub) keeps backing off;
                // one that worked for a while starts over from the shortest wait.
                if opened.elapsed() >= STABLE_AFTER {
                    backoff = bus.reopen_backoff;
                }
                match end {
                    End::Shutdown => return,
                    End::Lost(e) => {
                        count_error(bus_name, engine.stats());
                        tracing::warn!(bus = %bus_name, port = %bus.port, "{e}; reopening");
                    }
                }
            }
            Err(e) => {
                count_error(bus_name, engine.stats());
                if failures == 0 {
                    tracing::warn!(bus = %bus_name, "{e}; retrying with backoff up to {:?}", bus.reopen_backoff_max);
                } else {
                    tracing::debug!(bus = %bus_name, attempt = failures + 1, "{e}");
                }
                failures = failures.saturating_add(1);
            }
        }
        out.clear();
        engine.closed(&mut out);
        if dispatch(&mut out, None, ctx).await.is_err() {
            return;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(bus.reopen_backoff_max);
    }
}

fn count_error(bus: &str, stats: &SerialStats) {
    stats
        .port_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("edgebus_serial_port_errors_total", "bus" => bus.to_string()).increment(1);
}

async fn serve(
    mut stream: SerialStream,
    engine: &mut Engine,
    ctx: &SourceContext,
    out: &mut Vec<Action>,
) -> End {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        engine.tick(Instant::now(), out);
        match dispatch(out, Some(&mut stream), ctx).await {
            Ok(()) => {}
            Err(Stop::Shutdown) => return End::Shutdown,
            Err(Stop::Write(e)) => return End::Lost(PortError::Write(e)),
        }
        let deadline = engine.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            r = stream.read(&mut buf) => match r {
                Ok(0) => return End::Lost(PortError::Eof),
                Ok(n) => engine.bytes(&buf[..n], Instant::now(), SystemTime::now(), out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return End::Lost(PortError::Read(e)),
            },
            _ = sleep_until(deadline) => {}
        }
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

enum Stop {
    Shutdown,
    Write(std::io::Error),
}

/// Performs the engine's actions in order. Events use the bounded channel's back-pressure.
async fn dispatch(
    out: &mut Vec<Action>,
    mut stream: Option<&mut SerialStream>,
    ctx: &SourceContext,
) -> Result<(), Stop> {
    for a in out.drain(..) {
        match a {
            Action::Event(ev) => {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Err(Stop::Shutdown),
                    r = ctx.events.send(ev) => if r.is_err() { return Err(Stop::Shutdown) },
                }
            }
            Action::Write(bytes) => {
                let Some(s) = stream.as_deref_mut() else {
                    continue;
                };
                match tokio::time::timeout(WRITE_TIMEOUT, s.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Stop::Write(e)),
                    Err(_) => {
                        tracing::warn!("request write timed out (flow control holding the line?)")
                    }
                }
            }
        }
    }
    Ok(())
}
