//! The one task per bus: it owns the connection and serialises every request on it.
//!
//! Scheduling: each slave has its own due time; the task always serves the earliest. A
//! timeout ends that slave's cycle at once and its retry is queued behind the other due
//! slaves, so a silent slave costs its neighbours at most one timeout at a time. A slave
//! whose cycle got no answer at all is offline and then probed once per growing skip
//! interval (up to `backoff_max`) until it answers again.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::codec::{Raw, decode_registers};
use super::config::{DeviceRt, PointSpec, Timing, Transport};
use super::plan::{ReadRequest, Span, Table, plan, split};
use super::write::{WriteOp, parse_payload, prepare, result_payload};
use crate::message::QoS;
use crate::reading::{Quality, Reading, Value};
use crate::sources::{Command, SourceEvent};

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    #[error("exception: {0}")]
    Exception(ExceptionCode),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Wrong unit id, transaction id or function code in the response.
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("short response: {got} of {want}")]
    Short { got: usize, want: usize },
    #[error("not connected")]
    NotConnected,
}

impl BusError {
    /// The `kind` label of `edgebus_modbus_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::Timeout(_) => "timeout",
            BusError::Exception(_) => "exception",
            BusError::Io(_) => "io",
            BusError::Protocol(_) => "protocol",
            BusError::Short { .. } => "short",
            BusError::NotConnected => "not_connected",
        }
    }

    /// The slave (or the link) did not answer at all. A TCP gateway reporting that its
    /// serial-side target did not respond (0x0A/0x0B) counts as silence of that slave.
    fn is_silence(&self) -> bool {
        matches!(
            self,
            BusError::Timeout(_)
                | BusError::Io(_)
                | BusError::NotConnected
                | BusError::Exception(
                    ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice
                )
        )
    }
}

enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

struct Dev {
    rt: DeviceRt,
    spans: Vec<Span>,
    requests: Vec<ReadRequest>,
    next_due: Instant,
    /// Due time of the cycle in progress (the base of the next one).
    cycle_due: Instant,
    /// Request to resume with after a queued retry.
    resume: usize,
    retries_left: u8,
    answered: bool,
    /// A write landed: read the device again right after this cycle.
    poll_soon: bool,
    online: Option<bool>,
    failed_cycles: u32,
    last: Vec<Option<Value>>,
}

/// The bus task's state.
pub struct Bus {
    name: Arc<str>,
    transport: Transport,
    timing: Timing,
    devs: Vec<Dev>,
    conn: Option<Context>,
    last_end: Instant,
    last_unit: Option<u8>,
    reconnect_wait: Duration,
    events: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
}

impl Bus {
    pub fn new(
        name: Arc<str>,
        transport: Transport,
        timing: Timing,
        devices: Vec<DeviceRt>,
        events: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Bus {
        let now = Instant::now();
        let devs = devices
            .into_iter()
            .map(|rt| {
                let spans = rt.spans();
                let requests = plan(&spans, &rt.limits);
                let n = rt.points.len();
                Dev {
                    rt,
                    spans,
                    requests,
                    next_due: now,
                    cycle_due: now,
                    resume: 0,
                    retries_left: timing.retries,
                    answered: false,
                    poll_soon: false,
                    online: None,
                    failed_cycles: 0,
                    last: vec![None; n],
                }
            })
            .collect();
        Bus {
            name,
            reconnect_wait: timing.reconnect_min,
            transport,
            timing,
            devs,
            conn: None,
            last_end: now,
            last_unit: None,
            events,
            shutdown,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut commands_open = true;
        while !self.shutdown.is_cancelled() {
            if self.conn.is_none() && !self.connect().await {
                let until = Instant::now() + self.reconnect_wait;
                self.reconnect_wait = (self.reconnect_wait * 2).min(self.timing.reconnect_max);
                self.set_all_offline().await;
                // Writes cannot wait for the link: answer them now.
                loop {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = sleep_until(until) => break,
                        cmd = commands.recv(), if commands_open => match cmd {
                            Some(cmd) => self.handle_command(cmd).await,
                            None => commands_open = false,
                        },
                    }
                }
                continue;
            }
            let Some(i) = self.next_device() else {
                // No devices: serve writes only.
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    cmd = commands.recv(), if commands_open => match cmd {
                        Some(cmd) => self.handle_command(cmd).await,
                        None => commands_open = false,
                    },
                }
                continue;
            };
            let due = self.devs[i].next_due;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(cmd) => self.handle_command(cmd).await,
                    None => commands_open = false,
                },
                _ = sleep_until(due) => self.poll_device(i, &mut commands).await,
            }
        }
    }

    fn next_device(&self) -> Option<usize> {
        (0..self.devs.len()).min_by_key(|&i| (self.devs[i].next_due, i))
    }

    async fn connect(&mut self) -> bool {
        let r = timeout(self.timing.connect_timeout, open(&self.transport)).await;
        let err = match r {
            Ok(Ok(ctx)) => {
                info!(bus = %self.name, "connected");
                metrics::counter!("edgebus_modbus_connects_total", "bus" => self.name.to_string())
                    .increment(1);
                self.conn = Some(ctx);
                self.reconnect_wait = self.timing.reconnect_min;
                self.last_end = Instant::now();
                self.last_unit = None;
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("connect timeout after {:?}", self.timing.connect_timeout),
        };
        warn!(bus = %self.name, error = %err, retry_in = ?self.reconnect_wait, "cannot connect");
        metrics::counter!("edgebus_modbus_connect_failures_total", "bus" => self.name.to_string())
            .increment(1);
        false
    }

    async fn set_all_offline(&mut self) {
        for i in 0..self.devs.len() {
            self.set_online(i, false).await;
        }
    }

    async fn set_online(&mut self, i: usize, online: bool) {
        let d = &mut self.devs[i];
        if d.online == Some(online) {
            return;
        }
        d.online = Some(online);
        metrics::gauge!("edgebus_modbus_device_online", "bus" => self.name.to_string(), "device" => d.rt.name.to_string())
            .set(if online { 1.0 } else { 0.0 });
        if online {
            info!(bus = %self.name, device = %d.rt.name, "device online");
        } else {
            warn!(bus = %self.name, device = %d.rt.name, "device offline");
        }
        let device = d.rt.name.clone();
        self.emit(SourceEvent::Availability { device, online })
            .await;
    }

    /// Sends with back-pressure, but never holds up a shutdown (nothing is sent after it).
    async fn emit(&mut self, ev: SourceEvent) {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {}
            // A closed channel means the core is stopping; nothing to do.
            _ = self.events.send(ev) => {}
        }
    }

    /// Waits out the inter-request delay, the slave-switch delay and, on RTU framing, the
    /// 3.5-character silence.
    async fn pace(&mut self, unit: u8) {
        let mut gap = self.timing.delay;
        if let Transport::Rtu(r) = &self.transport {
            gap += r.silent_interval();
        }
        if self.last_unit.is_some_and(|u| u != unit) {
            gap += self.timing.slave_switch_delay;
        }
        if !gap.is_zero() {
            sleep_until(self.last_end + gap).await;
        }
    }

    /// One request with a timeout. A timeout or an I/O error on Modbus TCP drops the
    /// connection: a late answer would otherwise be taken for the next request's.
    async fn transact(
        &mut self,
        device: &Arc<str>,
        unit: u8,
        req: Request<'_>,
        t: Duration,
    ) -> Result<Response, BusError> {
        self.pace(unit).await;
        let Some(ctx) = self.conn.as_mut() else {
            return Err(BusError::NotConnected);
        };
        ctx.set_slave(Slave(unit));
        let fc = req.function_code().value();
        metrics::counter!("edgebus_modbus_requests_total", "bus" => self.name.to_string(), "device" => device.to_string(), "fc" => fc.to_string())
            .increment(1);
        let started = Instant::now();
        let shutdown = self.shutdown.clone();
        let r = tokio::select! {
            r = timeout(t, ctx.call(req)) => r,
            // Stop at once instead of waiting out a long timeout.
            _ = shutdown.cancelled() => return Err(BusError::NotConnected),
        };
        self.last_end = Instant::now();
        metrics::histogram!("edgebus_modbus_request_seconds", "bus" => self.name.to_string())
            .record((self.last_end - started).as_secs_f64());
        self.last_unit = Some(unit);
        let tcp = matches!(self.transport, Transport::Tcp(_));
        let out = match r {
            Err(_) => Err(BusError::Timeout(t)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(BusError::Io(e)),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(BusError::Protocol(e.to_string())),
            Ok(Ok(Err(code))) => Err(BusError::Exception(code)),
            Ok(Ok(Ok(resp))) => Ok(resp),
        };
        if let Err(e) = &out {
            metrics::counter!("edgebus_modbus_errors_total", "bus" => self.name.to_string(), "device" => device.to_string(), "kind" => e.kind())
                .increment(1);
            let drop_conn = match e {
                BusError::Io(_) => true,
                BusError::Timeout(_) | BusError::Protocol(_) => tcp,
                _ => false,
            };
            if drop_conn && let Some(mut c) = self.conn.take() {
                debug!(bus = %self.name, "dropping connection after {}", e.kind());
                // Bounded: a dead peer must not hold the bus.
                let _ = timeout(Duration::from_millis(100), c.disconnect()).await;
            }
        }
        out
    }

    async fn read(
        &mut self,
        device: &Arc<str>,
        unit: u8,
        req: &ReadRequest,
        t: Duration,
    ) -> Result<Data, BusError> {
        let (start, count) = (req.start, req.count);
        let request = match req.table {
            Table::Coil => Request::ReadCoils(start, count),
            Table::DiscreteInput => Request::ReadDiscreteInputs(start, count),
            Table::Holding => Request::ReadHoldingRegisters(start, count),
            Table::Input => Request::ReadInputRegisters(start, count),
        };
        let want = usize::from(count);
        match self.transact(device, unit, request, t).await? {
            Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) if b.len() >= want => {
                b.truncate(want);
                Ok(Data::Bits(b))
            }
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)
                if w.len() == want =>
            {
                Ok(Data::Words(w))
            }
            Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => {
                Err(BusError::Short { got: b.len(), want })
            }
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                Err(BusError::Short { got: w.len(), want })
            }
            other => Err(BusError::Protocol(format!("unexpected response {other:?}"))),
        }
    }

    /// Runs (or resumes) one poll cycle of device `i`.
    async fn poll_device(&mut self, i: usize, commands: &mut mpsc::Receiver<Command>) {
        let (name, unit, t) = {
            let d = &mut self.devs[i];
            if d.resume == 0 {
                d.cycle_due = d.next_due;
                d.answered = false;
                d.poll_soon = false;
            }
            (d.rt.name.clone(), d.rt.unit, d.rt.timeout)
        };
        let offline = self.devs[i].online == Some(false);
        let mut k = self.devs[i].resume;
        while k < self.devs[i].requests.len() {
            if self.shutdown.is_cancelled() {
                return;
            }
            // Writes go between two requests, not behind a whole (possibly long) cycle.
            while let Ok(cmd) = commands.try_recv() {
                self.handle_command(cmd).await;
            }
            let req = self.devs[i].requests[k].clone();
            let mut quick_retries = if offline { 0 } else { self.timing.retries };
            let res = loop {
                let r = self.read(&name, unit, &req, t).await;
                match &r {
                    Err(BusError::Protocol(_) | BusError::Short { .. }) if quick_retries > 0 => {
                        quick_retries -= 1;
                        metrics::counter!("edgebus_modbus_retries_total", "bus" => self.name.to_string(), "device" => name.to_string()).increment(1);
                    }
                    _ => break r,
                }
            };
            match res {
                Ok(data) => {
                    self.devs[i].answered = true;
                    self.publish_request(i, &req, &data).await;
                    k += 1;
                }
                Err(BusError::Exception(ExceptionCode::IllegalDataAddress))
                    if split(&req, &self.devs[i].spans).len() > 1 =>
                {
                    self.devs[i].answered = true;
                    let parts = split(&req, &self.devs[i].spans);
                    warn!(bus = %self.name, device = %name, start = req.start, count = req.count,
                        "illegal data address on a merged read; reading its {} points separately from now on", parts.len());
                    self.devs[i].requests.splice(k..=k, parts);
                }
                Err(e) if e.is_silence() => {
                    let d = &mut self.devs[i];
                    if d.retries_left > 0 && !offline {
                        // Queue the retry behind the other due slaves.
                        d.retries_left -= 1;
                        d.resume = k;
                        d.next_due = Instant::now();
                        metrics::counter!("edgebus_modbus_retries_total", "bus" => self.name.to_string(), "device" => name.to_string()).increment(1);
                        debug!(bus = %self.name, device = %name, error = %e, "retry queued");
                        return;
                    }
                    self.bad_points(i, &req, &e).await;
                    // The rest of the cycle is skipped; its points are bad too.
                    let rest: Vec<ReadRequest> = self.devs[i].requests[k + 1..].to_vec();
                    for r in &rest {
                        self.bad_points(i, r, &e).await;
                    }
                    break;
                }
                Err(e) => {
                    if matches!(e, BusError::Exception(_)) {
                        self.devs[i].answered = true;
                    }
                    self.bad_points(i, &req, &e).await;
                    k += 1;
                }
            }
        }
        let d = &mut self.devs[i];
        d.resume = 0;
        d.retries_left = self.timing.retries;
        let now = Instant::now();
        if d.answered {
            d.failed_cycles = 0;
            d.next_due = if d.poll_soon {
                now
            } else {
                (d.cycle_due + d.rt.poll).max(now)
            };
            self.set_online(i, true).await;
        } else {
            d.failed_cycles = d.failed_cycles.saturating_add(1);
            let skip = skip_interval(d.rt.poll, d.failed_cycles, self.timing.backoff_max);
            d.next_due = now + skip;
            debug!(bus = %self.name, device = %name, skip = ?skip, "no answer; backing off");
            self.set_online(i, false).await;
        }
    }

    async fn publish_request(&mut self, i: usize, req: &ReadRequest, data: &Data) {
        for &p in &req.points {
            let point = &self.devs[i].rt.points[p];
            let off = usize::from(point.span.address - req.start);
            let raw = match data {
                Data::Bits(b) => {
                    b.get(off)
                        .map(|v| Raw::Bool(*v))
                        .ok_or(super::codec::CodecError::Short {
                            need: off + 1,
                            got: b.len(),
                        })
                }
                Data::Words(w) => {
                    let end = (off + usize::from(point.span.count)).min(w.len());
                    decode_registers(
                        w.get(off..end).unwrap_or(&[]),
                        point.data_type,
                        point.order,
                        point.bit,
                    )
                }
            };
            match raw {
                Ok(raw) => {
                    let value = to_value(point, raw);
                    let reading = Reading::new(
                        self.devs[i].rt.name.clone(),
                        point.name.clone(),
                        value.clone(),
                    )
                    .with_unit(point.unit.clone());
                    self.devs[i].last[p] = Some(value);
                    self.emit(SourceEvent::Reading(reading)).await;
                }
                Err(e) => {
                    warn!(bus = %self.name, device = %self.devs[i].rt.name, point = %point.name, error = %e, "cannot decode");
                    metrics::counter!("edgebus_modbus_errors_total", "bus" => self.name.to_string(), "device" => self.devs[i].rt.name.to_string(), "kind" => "decode")
                        .increment(1);
                    self.bad_point(i, p).await;
                }
            }
        }
    }

    async fn bad_points(&mut self, i: usize, req: &ReadRequest, e: &BusError) {
        let d = &self.devs[i];
        let names: Vec<&str> = req.points.iter().map(|&p| &*d.rt.points[p].name).collect();
        warn!(bus = %self.name, device = %d.rt.name, unit = d.rt.unit, fc = req.table.function_code(),
            start = req.start, count = req.count, points = ?names, error = %e, "read failed");
        for &p in &req.points.clone() {
            self.bad_point(i, p).await;
        }
    }

    /// A bad reading keeps the last good value (NaN if none) so the payload shows the
    /// failure next to what was last known.
    async fn bad_point(&mut self, i: usize, p: usize) {
        let d = &self.devs[i];
        let point = &d.rt.points[p];
        let value = d.last[p].clone().unwrap_or(Value::Float(f64::NAN));
        let reading = Reading::new(d.rt.name.clone(), point.name.clone(), value)
            .with_unit(point.unit.clone())
            .with_quality(Quality::Bad);
        self.emit(SourceEvent::Reading(reading)).await;
    }

    async fn handle_command(&mut self, cmd: Command) {
        let Some(i) = self.devs.iter().position(|d| d.rt.name == cmd.device) else {
            warn!(bus = %self.name, device = %cmd.device, "write for an unknown device");
            return;
        };
        let Some(p) = self.devs[i]
            .rt
            .points
            .iter()
            .position(|p| p.name == cmd.point)
        else {
            warn!(bus = %self.name, device = %cmd.device, point = %cmd.point, "write for an unknown point");
            return;
        };
        let point = self.devs[i].rt.points[p].clone();
        let (bus, dev) = (self.name.to_string(), cmd.device.to_string());
        let labels = |r: &'static str| {
            [
                ("bus", bus.clone()),
                ("device", dev.clone()),
                ("result", r.to_string()),
            ]
        };
        if cmd.retained && !point.apply_retained {
            info!(bus = %self.name, device = %cmd.device, point = %cmd.point, "ignoring retained set message (apply_retained is off)");
            metrics::counter!("edgebus_modbus_writes_total", &labels("ignored_retained"))
                .increment(1);
            return;
        }
        let outcome = match parse_payload(&cmd.payload)
            .and_then(|v| prepare(&point, &v, self.devs[i].rt.write_multiple))
        {
            Err(e) => Err(format!("invalid: {e}")),
            Ok(op) => self.execute_write(i, op).await.map_err(|e| e.to_string()),
        };
        match &outcome {
            Ok(()) => {
                info!(bus = %self.name, device = %cmd.device, point = %cmd.point, "write ok");
                metrics::counter!("edgebus_modbus_writes_total", &labels("ok")).increment(1);
                // Read back soon so the new value shows up.
                let d = &mut self.devs[i];
                d.poll_soon = true;
                if d.resume == 0 && d.online != Some(false) {
                    d.next_due = d.next_due.min(Instant::now());
                }
            }
            Err(e) => {
                warn!(bus = %self.name, device = %cmd.device, point = %cmd.point, error = %e, "write failed");
                metrics::counter!("edgebus_modbus_writes_total", &labels("error")).increment(1);
            }
        }
        let topic = format!("{}/{}/set/result", cmd.device, cmd.point);
        let payload = result_payload(&outcome, &cmd.payload);
        self.emit(SourceEvent::Publish {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
        })
        .await;
    }

    async fn execute_write(&mut self, i: usize, op: WriteOp) -> Result<(), BusError> {
        let (name, unit, t) = (
            self.devs[i].rt.name.clone(),
            self.devs[i].rt.unit,
            self.devs[i].rt.timeout,
        );
        let req = match op {
            WriteOp::Coil {
                address,
                on,
                multiple: false,
            } => Request::WriteSingleCoil(address, on),
            WriteOp::Coil {
                address,
                on,
                multiple: true,
            } => Request::WriteMultipleCoils(address, vec![on].into()),
            WriteOp::Registers {
                address,
                words,
                multiple,
            } if words.len() == 1 && !multiple => Request::WriteSingleRegister(address, words[0]),
            WriteOp::Registers { address, words, .. } => {
                Request::WriteMultipleRegisters(address, words.into())
            }
            WriteOp::Bit {
                address,
                bit,
                on,
                multiple,
            } => {
                let word = match self
                    .transact(&name, unit, Request::ReadHoldingRegisters(address, 1), t)
                    .await?
                {
                    Response::ReadHoldingRegisters(w) if w.len() == 1 => w[0],
                    other => {
                        return Err(BusError::Protocol(format!("unexpected response {other:?}")));
                    }
                };
                let word = super::codec::set_bit(word, bit, on)
                    .map_err(|e| BusError::Protocol(e.to_string()))?;
                if multiple {
                    Request::WriteMultipleRegisters(address, vec![word].into())
                } else {
                    Request::WriteSingleRegister(address, word)
                }
            }
        };
        self.transact(&name, unit, req, t).await.map(|_| ())
    }
}

/// Skip interval after `failed` silent cycles: the poll interval doubled per failure,
/// capped at `max` (never below the poll interval itself).
pub fn skip_interval(poll: Duration, failed: u32, max: Duration) -> Duration {
    let factor = 1u32 << failed.min(16);
    poll.saturating_mul(factor).min(max.max(poll))
}

fn to_value(point: &PointSpec, raw: Raw) -> Value {
    if point.common.has_scaling()
        && let Some(x) = raw.as_f64()
    {
        return Value::Float(point.common.apply_scale(x));
    }
    match raw {
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(v) => Value::Int(v),
        Raw::UInt(v) => Value::UInt(v),
        Raw::Float(v) => Value::Float(v),
        Raw::Text(s) => Value::Text(s),
    }
}

/// Opens the transport (no timeout here; the caller bounds it).
async fn open(transport: &Transport) -> std::io::Result<Context> {
    use tokio_modbus::client::{rtu, tcp};
    match transport {
        Transport::Tcp(t) | Transport::RtuOverTcp(t) => {
            let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
            stream.set_nodelay(true)?;
            Ok(match transport {
                Transport::Tcp(_) => tcp::attach(stream),
                _ => rtu::attach(stream),
            })
        }
        Transport::Rtu(r) => {
            use tokio_serial::SerialPortBuilderExt;
            let data_bits = match r.data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            };
            let parity = match r.parity {
                super::config::Parity::None => tokio_serial::Parity::None,
                super::config::Parity::Even => tokio_serial::Parity::Even,
                super::config::Parity::Odd => tokio_serial::Parity::Odd,
            };
            let stop_bits = if r.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            };
            let port = tokio_serial::new(&r.port, r.baud)
                .data_bits(data_bits)
                .parity(parity)
                .stop_bits(stop_bits)
                .open_native_async()
                .map_err(std::io::Error::other)?;
            Ok(rtu::attach(port))
        }
    }
}

/// Boxes [`Bus::run`] for the `Source` trait.
pub fn run_boxed(
    bus: Bus,
    commands: mpsc::Receiver<Command>,
) -> futures::future::BoxFuture<'static, ()> {
    bus.run(commands).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_grows_and_caps() {
        let poll = Duration::from_secs(5);
        let max = Duration::from_secs(60);
        assert_eq!(skip_interval(poll, 1, max), Duration::from_secs(10));
        assert_eq!(skip_interval(poll, 2, max), Duration::from_secs(20));
        assert_eq!(skip_interval(poll, 3, max), Duration::from_secs(40));
        assert_eq!(skip_interval(poll, 4, max), max);
        assert_eq!(skip_interval(poll, u32::MAX, max), max);
        // A slow poll is never shortened by the cap.
        assert_eq!(
            skip_interval(Duration::from_secs(600), 3, max),
            Duration::from_secs(600)
        );
    }
}
