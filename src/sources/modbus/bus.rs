//! The one task per bus: it owns the connection and serialises every request on it.
//!
//! Scheduling: each slave has its own due time; the task always serves the earliest. A
//! timeout ends that slave's cycle at once and its retry is queued behind the other due
//! slaves, so a silent slave costs its neighbours at most one timeout at a time. A slave
//! whose cycle got no answer at all is offline and then probed once per growing skip
//! interval (up to `backoff_max`) until it answers again. The wire itself (pacing,
//! timeouts, reconnects) is in [`super::link`].

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_modbus::prelude::ExceptionCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::codec::{Raw, decode_registers};
use super::config::{DeviceRt, PointSpec, Timing, Transport};
use super::link::{BusError, Data, Link};
use super::plan::{ReadRequest, Span, plan, split};
use super::write::{parse_payload, prepare, result_payload};
use crate::message::QoS;
use crate::reading::{Quality, Reading, Value};
use crate::sources::{Command, SourceEvent};

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
    timing: Timing,
    link: Link,
    devs: Vec<Dev>,
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
            link: Link::new(name.clone(), transport, timing.clone(), shutdown.clone()),
            name,
            timing,
            devs,
            events,
            shutdown,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut commands_open = true;
        while !self.shutdown.is_cancelled() {
            if !self.link.is_connected() && !self.link.connect().await {
                let until = Instant::now() + self.link.next_reconnect_wait();
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
                let r = self.link.read(&name, unit, &req, t).await;
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
                        "illegal data address on a merged read; split into {} reads from now on", parts.len());
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
            Ok(op) => {
                let d = &self.devs[i].rt;
                let (name, unit, t) = (d.name.clone(), d.unit, d.timeout);
                self.link
                    .write(&name, unit, op, t)
                    .await
                    .map_err(|e| e.to_string())
            }
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
