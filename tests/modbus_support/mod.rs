//! Shared by the Modbus integration tests: an in-process tokio-modbus server that counts
//! what it receives and can be told to be silent or to refuse addresses, and a harness that
//! runs a Modbus source built from YAML through the real config path.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgebus::config::Config;
use edgebus::reading::{Quality, Reading, Value};
use edgebus::sources::modbus::config::{DeviceRt, ModbusDevice, Timing};
use edgebus::sources::modbus::plan::plan;
use edgebus::sources::{Command, SourceContext, SourceEvent, build_all};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_util::sync::CancellationToken;

/// A peer from outside the Rust toolchain is missing: skip on a dev box, fail in CI.
pub fn peer_missing(what: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test peer missing in CI: {what}");
    }
    eprintln!("skipping: {what} is not available");
    true
}

/// One simulated slave.
pub struct Unit {
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
    pub coils: Vec<bool>,
    pub discrete: Vec<bool>,
    /// Never answers (the request is swallowed).
    pub silent: bool,
    /// Reads covering any of these addresses get an illegal-address exception.
    pub illegal: HashSet<u16>,
    /// Every request gets this exception.
    pub fail: Option<ExceptionCode>,
    /// Register reads answer one register less than asked.
    pub short: bool,
}

impl Default for Unit {
    fn default() -> Self {
        Unit {
            holding: vec![0; 65536],
            input: vec![0; 65536],
            coils: vec![false; 65536],
            discrete: vec![false; 65536],
            silent: false,
            illegal: HashSet::new(),
            fail: None,
            short: false,
        }
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub unit: u8,
    pub fc: u8,
    pub address: u16,
    pub count: u16,
    pub at: Instant,
}

#[derive(Default)]
pub struct SimState {
    pub units: HashMap<u8, Unit>,
    pub log: Vec<Seen>,
}

#[derive(Clone, Default)]
pub struct Sim(pub Arc<Mutex<SimState>>);

impl Sim {
    pub fn with<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
    pub fn unit<R>(&self, id: u8, f: impl FnOnce(&mut Unit) -> R) -> R {
        self.with(|s| f(s.units.entry(id).or_default()))
    }
    pub fn log(&self) -> Vec<Seen> {
        self.with(|s| s.log.clone())
    }
    pub fn count(&self, unit: u8) -> usize {
        self.with(|s| s.log.iter().filter(|r| r.unit == unit).count())
    }
    pub fn clear_log(&self) {
        self.with(|s| s.log.clear())
    }

    fn handle(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let mut s = self.0.lock().unwrap();
        let (fc, address, count) = describe(&req.request);
        s.log.push(Seen {
            unit: req.slave,
            fc,
            address,
            count,
            at: Instant::now(),
        });
        let Some(u) = s.units.get_mut(&req.slave) else {
            return Ok(None); // no such slave on the line: silence, as on RS-485
        };
        if u.silent {
            return Ok(None);
        }
        if let Some(e) = u.fail {
            return Err(e);
        }
        let range = usize::from(address)..usize::from(address) + usize::from(count);
        if u.short
            && matches!(
                req.request,
                Request::ReadHoldingRegisters(..) | Request::ReadInputRegisters(..)
            )
        {
            let short = range.start..range.end.saturating_sub(1);
            return Ok(Some(Response::ReadHoldingRegisters(
                u.holding[short].to_vec(),
            )));
        }
        if range.end > 65536 || range.clone().any(|a| u.illegal.contains(&(a as u16))) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(Some(match req.request {
            Request::ReadCoils(..) => Response::ReadCoils(u.coils[range].to_vec()),
            Request::ReadDiscreteInputs(..) => {
                Response::ReadDiscreteInputs(u.discrete[range].to_vec())
            }
            Request::ReadHoldingRegisters(..) => {
                Response::ReadHoldingRegisters(u.holding[range].to_vec())
            }
            Request::ReadInputRegisters(..) => {
                Response::ReadInputRegisters(u.input[range].to_vec())
            }
            Request::WriteSingleCoil(a, v) => {
                u.coils[usize::from(a)] = v;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteSingleRegister(a, v) => {
                u.holding[usize::from(a)] = v;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleCoils(a, v) => {
                u.coils[range].copy_from_slice(&v);
                Response::WriteMultipleCoils(a, v.len() as u16)
            }
            Request::WriteMultipleRegisters(a, v) => {
                u.holding[range].copy_from_slice(&v);
                Response::WriteMultipleRegisters(a, v.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        }))
    }
}

fn describe(r: &Request<'_>) -> (u8, u16, u16) {
    let fc = r.function_code().value();
    let (a, c) = match r {
        Request::ReadCoils(a, c)
        | Request::ReadDiscreteInputs(a, c)
        | Request::ReadHoldingRegisters(a, c)
        | Request::ReadInputRegisters(a, c) => (*a, *c),
        Request::WriteSingleCoil(a, _) | Request::WriteSingleRegister(a, _) => (*a, 1),
        Request::WriteMultipleCoils(a, v) => (*a, v.len() as u16),
        Request::WriteMultipleRegisters(a, v) => (*a, v.len() as u16),
        _ => (0, 0),
    };
    (fc, a, c)
}

struct SimService(Sim);

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.0.handle(req))
    }
}

/// A running in-process Modbus TCP server; dropping or `stop()` closes every connection.
pub struct TcpSim {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpSim {
    pub async fn start(sim: &Sim) -> TcpSim {
        Self::start_on(sim, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(sim: &Sim, addr: SocketAddr) -> TcpSim {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = sim.clone();
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, socket_addr| {
                let sim = sim.clone();
                async move {
                    accept_tcp_connection(stream, socket_addr, move |_| {
                        Ok(Some(SimService(sim.clone())))
                    })
                }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        TcpSim { addr, task }
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The process-wide metrics recorder (one per test binary).
pub fn metrics() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// Sum of a counter over the series whose labels contain every `labels` pair.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = metrics().render();
    let mut sum = 0u64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            sum += rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
    }
    sum
}

/// A Modbus source running from a YAML device map.
pub struct Harness {
    pub events: Arc<Mutex<Vec<(Instant, SourceEvent)>>>,
    pub commands: mpsc::Sender<Command>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    /// Planned read requests per cycle of each device, in map order.
    pub planned: Vec<usize>,
}

/// Builds every source of `yaml` (must be exactly one) and runs it.
pub fn run_yaml(yaml: &str) -> Harness {
    metrics();
    let config = Config::from_text(std::path::Path::new("test.yaml"), yaml, &|_| None)
        .unwrap_or_else(|e| panic!("config: {e:?}"));
    let built = build_all(&config).unwrap_or_else(|e| panic!("build: {e:?}"));
    assert_eq!(built.sources.len(), 1);
    let planned = config
        .devices
        .iter()
        .map(|d| {
            let dev: ModbusDevice = d.parse().unwrap();
            let rt = DeviceRt::resolve(&d.common, &dev, &Timing::default());
            plan(&rt.spans(), &rt.limits).len()
        })
        .collect();
    let source = built.sources.into_iter().next().unwrap().source;
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        events: ev_tx,
        commands: cmd_rx,
        shutdown: shutdown.clone(),
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(ev) = ev_rx.recv().await {
            sink.lock().unwrap().push((Instant::now(), ev));
        }
    });
    let task = tokio::spawn(source.run(ctx));
    Harness {
        events,
        commands: cmd_tx,
        shutdown,
        task,
        planned,
    }
}

impl Harness {
    pub fn readings(&self, device: &str, point: &str) -> Vec<Reading> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                SourceEvent::Reading(r) if &*r.device == device && &*r.point == point => {
                    Some(r.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn last(&self, device: &str, point: &str) -> Option<Reading> {
        self.readings(device, point).pop()
    }

    pub fn availability(&self, device: &str) -> Vec<bool> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                SourceEvent::Availability { device: d, online } if &**d == device => Some(*online),
                _ => None,
            })
            .collect()
    }

    pub fn publishes(&self) -> Vec<(String, serde_json::Value)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                SourceEvent::Publish { topic, payload, .. } => Some((
                    topic.clone(),
                    serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null),
                )),
                _ => None,
            })
            .collect()
    }

    pub async fn set(&self, device: &str, point: &str, payload: &str, retained: bool) {
        let cmd = Command {
            device: Arc::from(device),
            point: Arc::from(point),
            payload: bytes::Bytes::from(payload.to_string()),
            retained,
        };
        self.commands.send(cmd).await.unwrap();
    }

    /// Cancels the source and waits (bounded) for it to end.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        wait_for(5, "source stops", || self.task.is_finished()).await;
    }
}

/// Polls `f` until it holds or `secs` pass (then panics with `what`).
pub async fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > end {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn good(r: &Option<Reading>) -> Option<&Value> {
    r.as_ref()
        .filter(|r| r.quality == Quality::Good)
        .map(|r| &r.value)
}
