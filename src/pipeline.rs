//! Wiring: sources -> formatter -> outbox -> upstream, downlink routing, reload and graceful
//! shutdown. The one place that knows every part.

use portable_atomic::AtomicU64;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::format::Formatter;
use crate::health::{DeviceBoard, Monitor};
use crate::message::{Message, QoS};
use crate::outbox::{Outbox, OutboxError};
use crate::reading::Quality;
use crate::sources::{Command, SourceContext, SourceEvent};
use crate::upstream::{Upstream, UpstreamHandle};

/// Capacity of the channel from all sources to the formatter. Bounded so a flood from one
/// source turns into back-pressure on that source, not into memory growth.
const EVENT_QUEUE: usize = 4096;
/// Writes waiting for one source; more are rejected (and counted) rather than queued.
const COMMAND_QUEUE: usize = 64;
/// How long sources get to stop before they are abandoned at shutdown or reload.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// At shutdown, how long the `offline` availability messages get to reach the broker before
/// the connection closes.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Above this many queued messages, shutdown does not publish device `offline` messages.
const GOODBYE_BACKLOG: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// `…/{device}/{point}/set` topic -> (device, point, the owning source's command queue).
type WriteMap = Arc<HashMap<String, (Arc<str>, Arc<str>, mpsc::Sender<Command>)>>;

/// The running sources of one configuration generation, and the router that formats what
/// they emit.
struct Generation {
    cancel: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    router: JoinHandle<()>,
    /// `{…}/{device}/{point}/set` -> the owning source's command queue.
    writes: WriteMap,
}

/// A running gateway.
pub struct Gateway {
    config: Config,
    outbox: Outbox,
    upstream: UpstreamHandle,
    upstream_task: JoinHandle<()>,
    upstream_cancel: CancellationToken,
    generation: Generation,
    downlink: JoinHandle<()>,
    mqttsn: Option<(CancellationToken, JoinHandle<()>)>,
    writes_tx: tokio::sync::watch::Sender<WriteMap>,
    progress: Arc<AtomicU64>,
    started: Instant,
    /// What each device last reported (health summary, metrics, shutdown).
    board: Arc<DeviceBoard>,
    monitor: (CancellationToken, JoinHandle<()>),
}

impl Gateway {
    /// Opens the outbox, connects upstream and starts every source.
    pub async fn start(config: Config) -> Result<Gateway, PipelineError> {
        // First: counts made before the recorder exists (opening the outbox, the first
        // connection) would be lost.
        if let Some(bind) = config.metrics.as_ref().and_then(|m| m.bind)
            && let Err(e) = crate::metrics::install(bind)
        {
            // Readings matter more than metrics: the gateway runs on without the endpoint.
            tracing::error!(error = %e, "metrics endpoint not started");
        }
        let outbox = Outbox::open(&config.gateway.data_dir, &config.buffer)?;
        let (upstream, handle) = Upstream::new(
            &config.upstream,
            format!("{}/status", config.base_topic()),
            client_id(&config),
            outbox.clone(),
        )
        .map_err(|e| PipelineError::Upstream(e.to_string()))?;
        let upstream_cancel = CancellationToken::new();
        let upstream_task = tokio::spawn(upstream.run(upstream_cancel.clone()));
        let progress = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let board = Arc::new(DeviceBoard::new(started));
        board.add(&device_names(&config));
        let generation =
            start_generation(&config, &outbox, &handle, &progress, started, &board).await?;
        let monitor_cancel = CancellationToken::new();
        let monitor = Monitor {
            gateway: config.gateway.id.clone(),
            topic: format!("{}/health", config.base_topic()),
            interval: config
                .metrics
                .as_ref()
                .map(|m| m.health_interval)
                .unwrap_or(crate::health::DEFAULT_INTERVAL),
            clock: config.gateway.clock_check,
            started,
            board: board.clone(),
            outbox: outbox.clone(),
            upstream: handle.clone(),
        };
        let monitor_task = tokio::spawn(monitor.run(monitor_cancel.clone()));
        let (writes_tx, writes_rx) = tokio::sync::watch::channel(generation.writes.clone());
        let downlink = tokio::spawn(route_downlink(handle.clone(), writes_rx));
        let mqttsn = config.mqttsn.clone().map(|cfg| {
            let cancel = CancellationToken::new();
            let task = tokio::spawn(crate::mqttsn::wiring::run_with_core(
                cfg,
                outbox.clone(),
                handle.clone(),
                cancel.clone(),
            ));
            let task = tokio::spawn(async move {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "MQTT-SN gateway stopped; the other sources keep running"),
                    Err(e) => tracing::error!(error = %e, "MQTT-SN gateway failed; the other sources keep running"),
                }
            });
            (cancel, task)
        });
        tracing::info!(
            gateway = %config.gateway.id,
            data_dir = %config.gateway.data_dir.display(),
            "gateway started"
        );
        Ok(Gateway {
            config,
            outbox,
            upstream: handle,
            upstream_task,
            upstream_cancel,
            generation,
            downlink,
            mqttsn,
            writes_tx,
            progress,
            started,
            board,
            monitor: (monitor_cancel, monitor_task),
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn upstream(&self) -> &UpstreamHandle {
        &self.upstream
    }

    /// Milliseconds since start at which the router last made progress (for the watchdog).
    pub fn last_progress(&self) -> Duration {
        Duration::from_millis(self.progress.load(Ordering::Relaxed))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Applies a new configuration: sources are restarted, the outbox (and everything
    /// buffered in it) is kept, Home Assistant discovery is published again. Upstream,
    /// buffer and metrics changes need a restart; they are reported and the old settings
    /// stay in force.
    pub async fn reload(&mut self, new: Config) -> Result<(), PipelineError> {
        if format!("{:?}", new.upstream) != format!("{:?}", self.config.upstream)
            || format!("{:?}", new.buffer) != format!("{:?}", self.config.buffer)
            || new.gateway.data_dir != self.config.gateway.data_dir
            || format!("{:?}", new.metrics) != format!("{:?}", self.config.metrics)
        {
            tracing::warn!(
                "upstream, buffer, metrics or data_dir changed: these take effect after a restart"
            );
        }
        let mut new = new;
        new.upstream = self.config.upstream.clone();
        new.buffer = self.config.buffer.clone();
        new.gateway.data_dir = self.config.gateway.data_dir.clone();
        new.mqttsn = self.config.mqttsn.clone();
        new.metrics = self.config.metrics.clone();
        self.board.add(&device_names(&new));
        let next = start_generation(
            &new,
            &self.outbox,
            &self.upstream,
            &self.progress,
            self.started,
            &self.board,
        )
        .await
        .inspect_err(|_| {
            self.board.set_devices(&device_names(&self.config));
        })?;
        stop_generation(std::mem::replace(&mut self.generation, next)).await;
        let _ = self.writes_tx.send(self.generation.writes.clone());
        // After the old sources stopped, so none of them can say `online` again.
        sync_devices(&new, &self.board, &self.outbox).await;
        self.config = new;
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Graceful stop: sources stop, everything they emitted reaches the outbox, every
    /// device (when the broker is reachable now) and then the upstream say `offline`, and
    /// every unacknowledged message is committed to disk.
    pub async fn shutdown(self) -> Result<(), PipelineError> {
        self.monitor.0.cancel();
        let _ = self.monitor.1.await;
        if let Some((cancel, task)) = self.mqttsn {
            cancel.cancel();
            let _ = tokio::time::timeout(STOP_GRACE, task).await;
        }
        stop_generation(self.generation).await;
        self.downlink.abort();
        say_devices_offline(&self.config, &self.board, &self.outbox, &self.upstream).await;
        self.upstream_cancel.cancel();
        if tokio::time::timeout(STOP_GRACE, self.upstream_task)
            .await
            .is_err()
        {
            tracing::warn!("upstream did not stop in time");
        }
        self.outbox.close().await?;
        tracing::info!("gateway stopped; unsent messages are on disk");
        Ok(())
    }
}

/// Publishes `offline` for every device not already offline, when that can reach the broker
/// now: connected, and not behind a backlog. Otherwise nothing is queued: the messages would
/// arrive after the next start's fresh availability or after a long drain, stale either way,
/// and the gateway's own status (its last will) already says `offline` to anyone watching.
async fn say_devices_offline(
    config: &Config,
    board: &DeviceBoard,
    outbox: &Outbox,
    upstream: &UpstreamHandle,
) {
    let backlog = outbox.stats().depth;
    if !upstream.status().connected || backlog > GOODBYE_BACKLOG {
        return;
    }
    let f = Formatter::new(config, &[]);
    for d in board.snapshot() {
        if d.online == Some(false) {
            continue;
        }
        if let Err(e) = outbox.push(f.availability(&d.name, false)).await {
            tracing::warn!(device = %d.name, error = %e, "offline availability not queued");
        }
    }
    let t0 = Instant::now();
    while outbox.stats().depth > 0 && t0.elapsed() < GOODBYE_GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The MQTT client id: `upstream.client_id`, else the gateway id (unique per gateway, so a
/// fleet can share one broker).
fn client_id(config: &Config) -> String {
    config
        .upstream
        .client_id
        .clone()
        .unwrap_or_else(|| config.gateway.id.clone())
}

/// The enabled devices of a map.
fn device_names(config: &Config) -> Vec<Arc<str>> {
    config
        .devices
        .iter()
        .filter(|d| d.common.enabled)
        .map(|d| Arc::from(d.common.name.as_str()))
        .collect()
}

/// Makes the board list the enabled devices of `config`; devices that left the map are
/// marked `offline`, so their availability topic does not say `online` forever.
async fn sync_devices(config: &Config, board: &DeviceBoard, outbox: &Outbox) {
    let f = Formatter::new(config, &[]);
    for gone in board.set_devices(&device_names(config)) {
        tracing::info!(device = %gone, "device removed from the map; marked offline");
        if let Err(e) = outbox.push(f.availability(&gone, false)).await {
            tracing::warn!(device = %gone, error = %e, "offline availability not queued");
        }
    }
}

async fn start_generation(
    config: &Config,
    outbox: &Outbox,
    upstream: &UpstreamHandle,
    progress: &Arc<AtomicU64>,
    started: Instant,
    board: &Arc<DeviceBoard>,
) -> Result<Generation, PipelineError> {
    let built = crate::sources::build_all(config)
        .map_err(|issues| ConfigError::Invalid(issues.iter().map(|i| i.to_string()).collect()))?;
    let formatter = Formatter::new(config, &built.catalog);
    // Discovery before the first reading, so HA knows the entities when their states come.
    if let Err(e) = crate::homeassistant::publish(config, &built.catalog, &formatter, outbox).await
    {
        tracing::warn!(error = %e, "Home Assistant discovery not published");
    }
    let cancel = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let mut writes = HashMap::new();
    let mut sources = Vec::new();
    for b in built.sources {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        for e in b.catalog.iter().filter(|e| e.point.writable) {
            let topic = format!("{}/set", formatter.topic_of(&e.device, &e.point.name));
            upstream.subscribe(topic.clone(), QoS::AtLeastOnce);
            writes.insert(
                topic,
                (
                    e.device.clone(),
                    Arc::from(e.point.name.as_str()),
                    cmd_tx.clone(),
                ),
            );
        }
        let name = b.source.name().to_string();
        let ctx = SourceContext {
            events: events_tx.clone(),
            commands: cmd_rx,
            shutdown: cancel.child_token(),
        };
        let fut = b.source.run(ctx);
        sources.push(tokio::spawn(async move {
            fut.await;
            tracing::debug!(source = %name, "source stopped");
        }));
    }
    drop(events_tx);
    let router = tokio::spawn(route_events(
        events_rx,
        formatter,
        outbox.clone(),
        progress.clone(),
        started,
        board.clone(),
    ));
    Ok(Generation {
        cancel,
        sources,
        router,
        writes: Arc::new(writes),
    })
}

async fn stop_generation(g: Generation) {
    g.cancel.cancel();
    for s in g.sources {
        let abort = s.abort_handle();
        if tokio::time::timeout(STOP_GRACE, s).await.is_err() {
            tracing::warn!("a source did not stop in time; abandoning it");
            abort.abort();
        }
    }
    // The router ends once every sender is gone and the queue is drained.
    let _ = tokio::time::timeout(STOP_GRACE, g.router).await;
}

/// Formats every event and hands it to the outbox. Exits when all sources are gone.
async fn route_events(
    mut rx: mpsc::Receiver<SourceEvent>,
    mut formatter: Formatter,
    outbox: Outbox,
    progress: Arc<AtomicU64>,
    started: Instant,
    board: Arc<DeviceBoard>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => return },
            _ = tick.tick() => {
                progress.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                continue;
            }
        };
        let msg: Option<Message> = match &ev {
            SourceEvent::Reading(r) => {
                metrics::counter!("edgebus_readings_total", "device" => r.device.to_string())
                    .increment(1);
                let good = r.quality == Quality::Good;
                board.reading(&r.device, good);
                metrics::counter!("edgebus_device_reads_total", "device" => r.device.to_string(), "result" => if good { "ok" } else { "failed" })
                    .increment(1);
                formatter.format(r)
            }
            SourceEvent::Availability { device, online } => {
                board.availability(device, *online);
                Some(formatter.availability(device, *online))
            }
            SourceEvent::Publish {
                topic,
                payload,
                qos,
                retain,
            } => Some(formatter.relative(topic, payload.clone(), *qos, *retain)),
        };
        if let Some(msg) = msg
            && let Err(e) = outbox.push(msg).await
        {
            metrics::counter!("edgebus_outbox_push_errors_total").increment(1);
            tracing::error!(error = %e, "outbox refused a message");
        }
        progress.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Routes broker messages to the sources that own the written points.
async fn route_downlink(upstream: UpstreamHandle, writes: tokio::sync::watch::Receiver<WriteMap>) {
    let mut incoming = upstream.incoming();
    while let Some(m) = incoming.recv().await {
        let map = writes.borrow().clone();
        let Some((device, point, tx)) = map.get(&m.topic) else {
            continue;
        };
        let cmd = Command {
            device: device.clone(),
            point: point.clone(),
            payload: m.payload.clone(),
            retained: m.retain,
        };
        if tx.try_send(cmd).is_err() {
            metrics::counter!("edgebus_commands_rejected_total", "device" => device.to_string())
                .increment(1);
            tracing::warn!(device = %device, point = %point, "write rejected: too many writes waiting for this device");
        }
    }
}

/// Runs the gateway until SIGTERM/SIGINT, reloading on SIGHUP. The process entry point.
pub async fn run(config_path: std::path::PathBuf) -> Result<(), PipelineError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a stop that arrives while the outbox opens is then a graceful stop
    // once start-up completes, not the default action killing the process half-way.
    let mut term = signal(SignalKind::terminate()).map_err(PipelineError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(PipelineError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(PipelineError::Signal)?;
    let config = Config::load(&config_path)?;
    let mut gw = Gateway::start(config).await?;
    crate::service::notify_ready();
    let mut watchdog = crate::service::Watchdog::from_env();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                crate::service::notify_reloading();
                match Config::load(&config_path) {
                    Ok(new) => if let Err(e) = gw.reload(new).await {
                        tracing::error!(error = %e, "reload failed; the previous configuration keeps running");
                    },
                    Err(e) => tracing::error!("reload rejected, the previous configuration keeps running:\n{e}"),
                }
                crate::service::notify_ready();
            }
            _ = watchdog.tick() => {
                watchdog.ping_if_alive(gw.uptime().saturating_sub(gw.last_progress()));
            }
        }
    }
    tracing::info!("stopping");
    crate::service::notify_stopping();
    gw.shutdown().await
}
