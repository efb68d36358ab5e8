//! A 200-point device over Modbus TCP against an in-process tokio-modbus server: poll cycles
//! per second and requests per cycle, planned reads versus one request per point.
//!
//! `cargo bench --bench modbus_poll` (set `MODBUS_BENCH_SECS` to change the run time).
//! Without `--bench` (as under `cargo test --all-targets`) it runs a short smoke pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgebus::config::Config;
use edgebus::sources::{SourceContext, SourceEvent, build_all};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_util::sync::CancellationToken;

const POINTS: u16 = 200;

#[derive(Clone)]
struct Regs {
    holding: Arc<Vec<u16>>,
    requests: Arc<AtomicU64>,
    /// Response delay in microseconds (a real device's turnaround), 0 for none.
    latency_us: Arc<AtomicU64>,
}

impl tokio_modbus::server::Service for Regs {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, ExceptionCode>> + Send>,
    >;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let latency = Duration::from_micros(self.latency_us.load(Ordering::Relaxed));
        let out = match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                let (a, n) = (usize::from(a), usize::from(n));
                match self.holding.get(a..a + n) {
                    Some(w) => Ok(Response::ReadHoldingRegisters(w.to_vec())),
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            out
        })
    }
}

fn yaml(port: u16, one_per_point: bool) -> String {
    let mut s = format!(
        "gateway: {{ id: bench, data_dir: /tmp }}\nbuses:\n  - {{ name: plc, type: modbus-tcp, host: 127.0.0.1, port: {port} }}\ndevices:\n  - name: dev\n    bus: plc\n    unit: 1\n    poll: 1ms\n"
    );
    if one_per_point {
        // An f32 needs 2 registers: a 2-register limit leaves one read per point.
        s += "    max_registers: 2\n";
    }
    s += "    points:\n";
    for i in 0..POINTS {
        s += &format!(
            "      - {{ name: p{i}, register: holding, address: {}, type: f32 }}\n",
            i * 2
        );
    }
    s
}

async fn run(port: u16, requests: &Arc<AtomicU64>, one_per_point: bool, secs: f64) -> (f64, f64) {
    let config = Config::from_text(
        std::path::Path::new("bench.yaml"),
        &yaml(port, one_per_point),
        &|_| None,
    )
    .expect("bench config");
    let source = build_all(&config)
        .expect("bench source")
        .sources
        .remove(0)
        .source;
    let (tx, mut rx) = mpsc::channel(4096);
    let (_cmd_tx, cmd_rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        events: tx,
        commands: cmd_rx,
        shutdown: shutdown.clone(),
    };
    // One mark (time, requests so far) per completed cycle: the last point's reading.
    let marks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = marks.clone();
    let last = format!("p{}", POINTS - 1);
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let SourceEvent::Reading(r) = ev
                && *r.point == *last
            {
                sink.lock()
                    .unwrap()
                    .push((Instant::now(), counter.load(Ordering::Relaxed)));
            }
        }
    });
    let task = tokio::spawn(source.run(ctx));
    // Warm up (connect, first cycle), then measure between the first and last cycle ends
    // inside the window, so partial cycles do not skew the figures.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    shutdown.cancel();
    let _ = task.await;
    let marks = marks.lock().unwrap();
    let inside: Vec<&(Instant, u64)> = marks.iter().filter(|(t, _)| *t >= t0).collect();
    let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
        return (0.0, f64::NAN);
    };
    let n = (inside.len() - 1) as f64;
    let polls = n / (last.0 - first.0).as_secs_f64();
    // NaN when the run was too short for two cycle ends.
    let per_cycle = (last.1 - first.1) as f64 / n;
    (polls, per_cycle)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let secs: f64 = if bench {
        std::env::var("MODBUS_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0)
    } else {
        0.3
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut holding = vec![0u16; usize::from(POINTS) * 2];
        for (i, w) in holding.chunks_mut(2).enumerate() {
            let b = (i as f32 * 1.5).to_be_bytes();
            w[0] = u16::from_be_bytes([b[0], b[1]]);
            w[1] = u16::from_be_bytes([b[2], b[3]]);
        }
        let regs = Regs {
            holding: Arc::new(holding),
            requests: Arc::new(AtomicU64::new(0)),
            latency_us: Arc::new(AtomicU64::new(0)),
        };
        let svc = regs.clone();
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, addr| {
                let svc = svc.clone();
                async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(svc.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        println!("modbus_poll: {POINTS} f32 points on one device, Modbus TCP, in-process server, {secs} s per run");
        for latency_us in [0u64, 2000] {
            regs.latency_us.store(latency_us, Ordering::Relaxed);
            println!("  device turnaround {} ms:", latency_us as f64 / 1000.0);
            for (label, one) in [("planned reads", false), ("one request per point", true)] {
                let (polls, per_cycle) = run(port, &regs.requests, one, secs).await;
                println!(
                    "    {label:<22} {per_cycle:>6.1} requests/cycle  {polls:>8.1} polls/s  {:>9.0} points/s",
                    polls * f64::from(POINTS)
                );
            }
        }
    });
}
