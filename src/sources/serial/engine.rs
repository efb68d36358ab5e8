//! The serial bus without I/O: bytes and clock ticks in, writes and events out. It frames
//! lines, routes each to the device that should get it (the one being polled, or the
//! streaming devices whose `match` accepts it), parses, converts, and tracks availability.
//! The port shell (`port.rs`) only moves bytes and sleeps until [`Engine::next_deadline`].

use portable_atomic::AtomicU64;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::framer::{Frame, Framer};
use super::parse::{Outcome, Parser, Raw, ValueType, convert};
use crate::reading::{Reading, Value};
use crate::sources::SourceEvent;

/// How line bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Utf8,
    /// ISO 8859-1: every byte is a character, so no line is rejected for its encoding.
    Latin1,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Write(Bytes),
    Event(SourceEvent),
}

/// Counters for one bus, shared with whoever wants to look (tests, health summary). The
/// same counts go to the `metrics` registry with labels.
#[derive(Debug, Default)]
pub struct SerialStats {
    /// Lines that parsed and carried data for a device.
    pub lines: AtomicU64,
    pub readings: AtomicU64,
    /// Dropped: line longer than `max_line`.
    pub overlong: AtomicU64,
    /// Dropped: line cut off by silence or a closed port.
    pub partial: AtomicU64,
    pub invalid_utf8: AtomicU64,
    pub checksum: AtomicU64,
    pub malformed: AtomicU64,
    pub no_match: AtomicU64,
    /// A field that would not convert to the point's type (`nan`, text for a number).
    pub conversion: AtomicU64,
    /// Valid lines no device uses (other NMEA sentences, lines no `match` accepted).
    pub ignored: AtomicU64,
    pub poll_timeouts: AtomicU64,
    pub opens: AtomicU64,
    pub port_errors: AtomicU64,
}

impl SerialStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Every kind of garbage together.
    pub fn garbage(&self) -> u64 {
        [
            &self.overlong,
            &self.partial,
            &self.invalid_utf8,
            &self.checksum,
            &self.malformed,
            &self.no_match,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn counter(&self, reason: &str) -> &AtomicU64 {
        match reason {
            "overlong" => &self.overlong,
            "partial" => &self.partial,
            "invalid_utf8" => &self.invalid_utf8,
            "checksum" => &self.checksum,
            "no_match" => &self.no_match,
            "conversion" => &self.conversion,
            _ => &self.malformed,
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A point ready to publish.
#[derive(Debug, Clone)]
pub struct PointRt {
    pub name: Arc<str>,
    pub unit: Option<Arc<str>>,
    pub ty: ValueType,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

/// Request/response state of a polled device.
#[derive(Debug, Clone)]
pub struct PollRt {
    pub command: Bytes,
    pub every: Duration,
    pub timeout: Duration,
    pub lines: usize,
    pub offline_after: u32,
    pub next_due: Option<Instant>,
    pub misses: u32,
}

#[derive(Debug, Clone)]
pub struct DeviceRt {
    pub name: Arc<str>,
    pub parser: Parser,
    pub matcher: Option<regex_lite::Regex>,
    pub points: Vec<PointRt>,
    pub poll: Option<PollRt>,
    /// Last availability announced (`None` before the first).
    pub online: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    dev: usize,
    /// When the request was written (for the request latency histogram).
    sent: Instant,
    deadline: Instant,
    remaining: usize,
    answered: bool,
}

/// Line routing and device state (split from the framer so both can be borrowed at once).
#[derive(Debug)]
struct Router {
    bus: Arc<str>,
    encoding: Encoding,
    devices: Vec<DeviceRt>,
    pending: Option<Pending>,
    stats: Arc<SerialStats>,
    warned: HashSet<(usize, &'static str)>,
    /// Per-device reading counters, registered once (the hot path does not allocate labels).
    reading_counters: Vec<metrics::Counter>,
}

#[derive(Debug)]
pub struct Engine {
    framer: Framer,
    router: Router,
    idle_timeout: Option<Duration>,
    last_rx: Option<Instant>,
    idle: bool,
}

impl Engine {
    pub fn new(
        bus: Arc<str>,
        framer: Framer,
        devices: Vec<DeviceRt>,
        idle_timeout: Option<Duration>,
        stats: Arc<SerialStats>,
    ) -> Engine {
        let reading_counters = devices
            .iter()
            .map(|d| metrics::counter!("edgebus_serial_readings_total", "bus" => bus.to_string(), "device" => d.name.to_string()))
            .collect();
        Engine {
            framer,
            router: Router {
                bus,
                encoding: Encoding::Utf8,
                devices,
                pending: None,
                stats,
                warned: HashSet::new(),
                reading_counters,
            },
            idle_timeout,
            last_rx: None,
            idle: false,
        }
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> Engine {
        self.router.encoding = encoding;
        self
    }

    pub fn stats(&self) -> &Arc<SerialStats> {
        &self.router.stats
    }

    pub fn devices(&self) -> &[DeviceRt] {
        &self.router.devices
    }

    /// The port is open: start clean and poll every polled device right away.
    pub fn opened(&mut self, now: Instant) {
        bump(&self.router.stats.opens);
        self.framer.reset();
        self.router.pending = None;
        self.last_rx = Some(now);
        self.idle = false;
        for d in &mut self.router.devices {
            if let Some(p) = d.poll.as_mut() {
                p.next_due = Some(now);
            }
        }
    }

    /// The port is gone (or could not be opened): every device is offline.
    pub fn closed(&mut self, out: &mut Vec<Action>) {
        if self.framer.flush_partial() {
            self.router.garbage(None, "partial");
        }
        self.router.pending = None;
        self.last_rx = None;
        for i in 0..self.router.devices.len() {
            self.router.set_online(i, false, out);
        }
    }

    pub fn bytes(&mut self, data: &[u8], now: Instant, ts: SystemTime, out: &mut Vec<Action>) {
        self.last_rx = Some(now);
        self.idle = false;
        let router = &mut self.router;
        self.framer
            .feed(data, |frame| router.frame(frame, now, ts, out));
    }

    /// Handles what is due at `now`: reply timeouts, silence, and the next poll.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let r = &mut self.router;
        if let Some(p) = r.pending.filter(|p| now >= p.deadline) {
            r.pending = None;
            if !p.answered {
                r.missed(p.dev, out);
            }
        }
        if let (Some(limit), Some(last)) = (self.idle_timeout, self.last_rx)
            && !self.idle
            && now.duration_since(last) >= limit
        {
            self.idle = true;
            if self.framer.flush_partial() {
                r.garbage(None, "partial");
            }
            for i in 0..r.devices.len() {
                if r.devices[i].poll.is_none() {
                    r.set_online(i, false, out);
                }
            }
        }
        if r.pending.is_none() {
            let due = r
                .devices
                .iter()
                .enumerate()
                .filter_map(|(i, d)| Some((i, d.poll.as_ref()?.next_due?)))
                .filter(|(_, t)| *t <= now)
                .min_by_key(|(_, t)| *t);
            if let Some((i, _)) = due
                && let Some(p) = r.devices[i].poll.as_mut()
            {
                let next = p.next_due.map_or(now, |t| t + p.every);
                // After a stall, do not fire a burst of catch-up polls.
                p.next_due = Some(if next <= now { now + p.every } else { next });
                r.pending = Some(Pending {
                    dev: i,
                    sent: now,
                    deadline: now + p.timeout,
                    remaining: p.lines,
                    answered: false,
                });
                out.push(Action::Write(p.command.clone()));
            }
        }
    }

    /// When [`Engine::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let r = &self.router;
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        match r.pending {
            Some(p) => consider(p.deadline),
            None => r
                .devices
                .iter()
                .filter_map(|d| d.poll.as_ref()?.next_due)
                .for_each(&mut consider),
        }
        if let (Some(limit), Some(last), false) = (self.idle_timeout, self.last_rx, self.idle) {
            consider(last + limit);
        }
        t
    }
}

impl Router {
    fn frame(&mut self, frame: Frame<'_>, now: Instant, ts: SystemTime, out: &mut Vec<Action>) {
        let bytes = match frame {
            Frame::Overlong { len } => {
                tracing::debug!(bus = %self.bus, len, "dropped an over-long line");
                self.garbage(None, "overlong");
                return;
            }
            Frame::Line(b) => b,
        };
        let latin1: String;
        let line = match self.encoding {
            Encoding::Utf8 => match std::str::from_utf8(bytes) {
                Ok(l) => l,
                Err(_) => {
                    self.garbage(None, "invalid_utf8");
                    return;
                }
            },
            Encoding::Latin1 => {
                latin1 = bytes.iter().map(|&b| char::from(b)).collect();
                &latin1
            }
        };
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if line.is_empty() {
            return;
        }
        if let Some(mut p) = self.pending
            && self.devices[p.dev].accepts(line)
        {
            p.remaining = p.remaining.saturating_sub(1);
            if self.deliver(p.dev, line, ts, out) {
                if !p.answered {
                    metrics::histogram!("edgebus_serial_request_seconds", "bus" => self.bus.to_string())
                        .record(now.saturating_duration_since(p.sent).as_secs_f64());
                }
                p.answered = true;
                if let Some(poll) = self.devices[p.dev].poll.as_mut() {
                    poll.misses = 0;
                }
            }
            self.pending = (p.remaining > 0).then_some(p);
            return;
        }
        let mut taken = false;
        for i in 0..self.devices.len() {
            if self.devices[i].poll.is_none() && self.devices[i].accepts(line) {
                taken = true;
                self.deliver(i, line, ts, out);
            }
        }
        if !taken {
            bump(&self.stats.ignored);
        }
    }

    /// Parses `line` for device `i`; true when it carried data for the device.
    fn deliver(&mut self, i: usize, line: &str, ts: SystemTime, out: &mut Vec<Action>) -> bool {
        let fields = match self.devices[i].parser.parse(line) {
            Ok(Outcome::Fields(f)) => f,
            Ok(Outcome::Ignored) => {
                bump(&self.stats.ignored);
                return false;
            }
            Err(e) => {
                let reason = e.reason();
                self.log_once(i, reason, &e.to_string(), line);
                self.garbage(Some(i), reason);
                return false;
            }
        };
        bump(&self.stats.lines);
        self.set_online(i, true, out);
        let d = &self.devices[i];
        let mut failed: Option<(String, String)> = None;
        let mut converted = 0;
        let mut failures = 0;
        for (raw, p) in fields.into_iter().zip(&d.points) {
            let Some(raw) = raw else { continue };
            match convert(raw, p.ty, p.scale, p.offset) {
                Ok(v) => {
                    converted += 1;
                    let r = Reading::new(d.name.clone(), p.name.clone(), to_value(v))
                        .with_unit(p.unit.clone())
                        .with_ts(ts);
                    out.push(Action::Event(SourceEvent::Reading(r)));
                }
                Err(e) => {
                    failures += 1;
                    failed = Some((p.name.to_string(), e.to_string()));
                }
            }
        }
        self.stats.readings.fetch_add(converted, Ordering::Relaxed);
        self.reading_counters[i].increment(converted);
        if let Some((point, msg)) = failed {
            self.stats.conversion.fetch_add(failures, Ordering::Relaxed);
            metrics::counter!("edgebus_serial_garbage_total", "bus" => self.bus.to_string(), "device" => self.devices[i].name.to_string(), "reason" => "conversion")
                .increment(failures);
            if self.warned.insert((i, "conversion")) {
                tracing::warn!(bus = %self.bus, device = %self.devices[i].name, point = %point, "value not usable: {msg} (further ones are logged at debug level)");
            } else {
                tracing::debug!(bus = %self.bus, device = %self.devices[i].name, point = %point, "value not usable: {msg}");
            }
        }
        true
    }

    fn missed(&mut self, i: usize, out: &mut Vec<Action>) {
        bump(&self.stats.poll_timeouts);
        let d = &mut self.devices[i];
        metrics::counter!("edgebus_serial_poll_timeouts_total", "bus" => self.bus.to_string(), "device" => d.name.to_string())
            .increment(1);
        tracing::debug!(bus = %self.bus, device = %d.name, "no reply to the request");
        let Some(p) = d.poll.as_mut() else { return };
        p.misses = p.misses.saturating_add(1);
        if p.misses >= p.offline_after {
            self.set_online(i, false, out);
        }
    }

    fn set_online(&mut self, i: usize, online: bool, out: &mut Vec<Action>) {
        let d = &mut self.devices[i];
        if d.online == Some(online) {
            return;
        }
        d.online = Some(online);
        tracing::info!(bus = %self.bus, device = %d.name, "device {}", if online { "online" } else { "offline" });
        out.push(Action::Event(SourceEvent::Availability {
            device: d.name.clone(),
            online,
        }));
    }

    fn garbage(&mut self, device: Option<usize>, reason: &'static str) {
        bump(self.stats.counter(reason));
        if device.is_none() && self.warned.insert((usize::MAX, reason)) {
            let what = match reason {
                "overlong" => "a line longer than max_line",
                "invalid_utf8" => {
                    "a line that is not UTF-8 (wrong baud rate? or set `encoding: latin1`)"
                }
                _ => "a cut-off line",
            };
            tracing::warn!(bus = %self.bus, "dropped {what}; further ones are only counted");
        }
        let device = device
            .map(|i| self.devices[i].name.to_string())
            .unwrap_or_default();
        metrics::counter!("edgebus_serial_garbage_total", "bus" => self.bus.to_string(), "device" => device, "reason" => reason)
            .increment(1);
    }

    fn log_once(&mut self, i: usize, reason: &'static str, msg: &str, line: &str) {
        let shown: String = line.chars().take(80).collect();
        if self.warned.insert((i, reason)) {
            tracing::warn!(bus = %self.bus, device = %self.devices[i].name, line = %shown.escape_debug(), "skipped a line: {msg} (further ones are counted and logged at debug level)");
        } else {
            tracing::debug!(bus = %self.bus, device = %self.devices[i].name, line = %shown.escape_debug(), "skipped a line: {msg}");
        }
    }
}

impl DeviceRt {
    fn accepts(&self, line: &str) -> bool {
        self.matcher.as_ref().is_none_or(|m| m.is_match(line))
    }
}

pub fn to_value(r: Raw) -> Value {
    match r {
        Raw::Float(f) => Value::Float(f),
        Raw::Int(i) => Value::Int(i),
        Raw::UInt(u) => Value::UInt(u),
        Raw::Bool(b) => Value::Bool(b),
        Raw::Text(s) => Value::Text(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::serial::framer::Delimiter;
    use crate::sources::serial::parse::{ParserSpec, csv::CsvOptions, kv::KvOptions};

    fn point(name: &str) -> PointRt {
        PointRt {
            name: name.into(),
            unit: None,
            ty: ValueType::Auto,
            scale: None,
            offset: None,
        }
    }

    fn kv_dev(name: &str, keys: &[&str], matcher: Option<&str>, poll: Option<PollRt>) -> DeviceRt {
        DeviceRt {
            name: name.into(),
            parser: Parser::build(&ParserSpec::Kv(KvOptions::default()), keys).unwrap(),
            matcher: matcher.map(|m| regex_lite::Regex::new(m).unwrap()),
            points: keys.iter().map(|k| point(k)).collect(),
            poll,
            online: None,
        }
    }

    fn poll(cmd: &str, lines: usize) -> PollRt {
        PollRt {
            command: Bytes::from(cmd.to_string()),
            every: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            lines,
            offline_after: 2,
            next_due: None,
            misses: 0,
        }
    }

    fn engine(devs: Vec<DeviceRt>, idle: Option<Duration>) -> Engine {
        Engine::new(
            "bus".into(),
            Framer::new(Delimiter::Lf, 64),
            devs,
            idle,
            Arc::default(),
        )
    }

    type Split = (
        Vec<(String, String, Value)>,
        Vec<(String, bool)>,
        Vec<Bytes>,
    );

    /// Readings as (device, point, value), availability changes, and writes.
    fn split(out: &mut Vec<Action>) -> Split {
        let (mut r, mut a, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for x in out.drain(..) {
            match x {
                Action::Event(SourceEvent::Reading(x)) => {
                    r.push((x.device.to_string(), x.point.to_string(), x.value))
                }
                Action::Event(SourceEvent::Availability { device, online }) => {
                    a.push((device.to_string(), online))
                }
                Action::Event(other) => panic!("unexpected {other:?}"),
                Action::Write(b) => w.push(b),
            }
        }
        (r, a, w)
    }

    #[test]
    fn streaming_lines_become_readings_and_online() {
        let mut e = engine(vec![kv_dev("ard", &["t", "h"], None, None)], None);
        let (t0, ts) = (Instant::now(), SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        e.opened(t0);
        e.bytes(b"t=21.5 h=4", t0, ts, &mut out);
        assert!(out.is_empty(), "half a line gives nothing");
        e.bytes(b"0\r\n\xff\xfe\njunk\nt=nan\n", t0, ts, &mut out);
        let (r, a, _) = split(&mut out);
        assert_eq!(
            r,
            vec![
                ("ard".into(), "t".into(), Value::Float(21.5)),
                ("ard".into(), "h".into(), Value::Float(40.0)),
            ]
        );
        assert_eq!(a, vec![("ard".into(), true)]);
        let s = e.stats();
        assert_eq!(SerialStats::get(&s.invalid_utf8), 1);
        assert_eq!(SerialStats::get(&s.malformed), 1);
        assert_eq!(SerialStats::get(&s.conversion), 1);
        assert_eq!(
            SerialStats::get(&s.lines),
            2,
            "the nan line was well-formed"
        );
        e.closed(&mut out);
        assert_eq!(split(&mut out).1, vec![("ard".into(), false)]);
    }

    #[test]
    fn match_routes_lines_between_devices() {
        let mut e = engine(
            vec![
                kv_dev("a", &["v"], Some("^id=A "), None),
                kv_dev("b", &["v"], Some("^id=B "), None),
            ],
            None,
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        e.opened(t0);
        e.bytes(
            b"id=A v=1\nid=B v=2\nid=C v=3\n",
            t0,
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        let (r, _, _) = split(&mut out);
        assert_eq!(
            r,
            vec![
                ("a".into(), "v".into(), Value::Float(1.0)),
                ("b".into(), "v".into(), Value::Float(2.0))
            ]
        );
        assert_eq!(SerialStats::get(&e.stats().ignored), 1);
    }

    #[test]
    fn polling_writes_reads_replies_and_times_out() {
        let mut e = engine(
            vec![kv_dev("s", &["pm"], None, Some(poll("R\r\n", 2)))],
            None,
        );
        let t0 = Instant::now();
        let ts = SystemTime::UNIX_EPOCH;
        let mut out = Vec::new();
        e.opened(t0);
        assert_eq!(e.next_deadline(), Some(t0));
        e.tick(t0, &mut out);
        assert_eq!(split(&mut out).2, vec![Bytes::from_static(b"R\r\n")]);
        assert_eq!(
            e.next_deadline(),
            Some(t0 + Duration::from_secs(1)),
            "waiting for the reply"
        );
        e.bytes(b"pm=12\npm=13\n", t0, ts, &mut out);
        let (r, a, _) = split(&mut out);
        assert_eq!(r.len(), 2);
        assert_eq!(a, vec![("s".into(), true)]);
        assert_eq!(
            e.next_deadline(),
            Some(t0 + Duration::from_secs(10)),
            "both lines read: next poll"
        );
        // Unsolicited line between polls: not for a polled device.
        e.bytes(b"pm=99\n", t0, ts, &mut out);
        assert!(split(&mut out).0.is_empty());
        // Two missed replies → offline (offline_after = 2).
        for k in 1..=2u64 {
            let due = t0 + Duration::from_secs(10 * k);
            e.tick(due, &mut out);
            assert_eq!(split(&mut out).2.len(), 1);
            e.tick(due + Duration::from_secs(1), &mut out);
            let (_, a, _) = split(&mut out);
            assert_eq!(
                a,
                if k == 2 {
                    vec![("s".to_string(), false)]
                } else {
                    vec![]
                }
            );
        }
        assert_eq!(SerialStats::get(&e.stats().poll_timeouts), 2);
        // A late start does not cause a burst of catch-up polls.
        let late = t0 + Duration::from_secs(100);
        e.tick(late, &mut out);
        assert_eq!(split(&mut out).2.len(), 1);
        e.tick(late + Duration::from_secs(1), &mut out);
        e.tick(late + Duration::from_secs(2), &mut out);
        assert!(split(&mut out).2.is_empty());
        assert_eq!(e.next_deadline(), Some(late + Duration::from_secs(10)));
    }

    #[test]
    fn polls_on_one_line_take_turns() {
        let mut e = engine(
            vec![
                kv_dev("a", &["v"], None, Some(poll("A\n", 1))),
                kv_dev("b", &["v"], None, Some(poll("B\n", 1))),
            ],
            None,
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        e.opened(t0);
        e.tick(t0, &mut out);
        assert_eq!(
            split(&mut out).2,
            vec![Bytes::from_static(b"A\n")],
            "one request at a time"
        );
        e.bytes(b"v=1\n", t0, SystemTime::UNIX_EPOCH, &mut out);
        e.tick(t0, &mut out);
        let (r, _, w) = split(&mut out);
        assert_eq!(r, vec![("a".into(), "v".into(), Value::Float(1.0))]);
        assert_eq!(w, vec![Bytes::from_static(b"B\n")]);
    }

    #[test]
    fn idle_timeout_drops_partial_and_marks_streaming_offline() {
        let mut e = engine(
            vec![kv_dev("g", &["v"], None, None)],
            Some(Duration::from_secs(5)),
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        e.opened(t0);
        e.bytes(b"v=1\nv=", t0, SystemTime::UNIX_EPOCH, &mut out);
        split(&mut out);
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(5)));
        e.tick(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(split(&mut out).1, vec![("g".into(), false)]);
        assert_eq!(SerialStats::get(&e.stats().partial), 1);
        assert_eq!(e.next_deadline(), None);
        e.bytes(
            b"2\nv=3\n",
            t0 + Duration::from_secs(6),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        let (r, a, _) = split(&mut out);
        assert_eq!(
            r,
            vec![("g".into(), "v".into(), Value::Float(3.0))],
            "the cut line's tail is not glued on"
        );
        assert_eq!(a, vec![("g".into(), true)]);
    }

    #[test]
    fn latin1_lines_are_decoded() {
        let dev = DeviceRt {
            name: "t".into(),
            parser: Parser::build(
                &ParserSpec::Regex(crate::sources::serial::parse::regex::RegexOptions {
                    pattern: r"(?P<t>[\d.]+)(?P<u>°C)".into(),
                }),
                &["t", "u"],
            )
            .unwrap(),
            matcher: None,
            points: vec![point("t"), point("u")],
            poll: None,
            online: None,
        };
        let mut utf8 = engine(vec![dev.clone()], None);
        let mut latin1 = engine(vec![dev], None).with_encoding(Encoding::Latin1);
        let mut out = Vec::new();
        for e in [&mut utf8, &mut latin1] {
            e.opened(Instant::now());
            e.bytes(
                b"21.5\xb0C\n",
                Instant::now(),
                SystemTime::UNIX_EPOCH,
                &mut out,
            );
        }
        assert_eq!(SerialStats::get(&utf8.stats().invalid_utf8), 1);
        let (r, _, _) = split(&mut out);
        assert_eq!(
            r,
            vec![
                ("t".into(), "t".into(), Value::Float(21.5)),
                ("t".into(), "u".into(), Value::Text("°C".into())),
            ]
        );
    }

    #[test]
    fn types_scale_and_units() {
        let mut d = DeviceRt {
            name: "w".into(),
            parser: Parser::build(
                &ParserSpec::Csv(CsvOptions {
                    columns: vec!["t".into(), "n".into()],
                    separator: ";".into(),
                    allow_extra_columns: false,
                }),
                &["t", "n"],
            )
            .unwrap(),
            matcher: None,
            points: vec![point("t"), point("n")],
            poll: None,
            online: None,
        };
        d.points[0].scale = Some(0.1);
        d.points[0].unit = Some("°C".into());
        d.points[1].ty = ValueType::Uint;
        let mut e = engine(vec![d], None);
        let mut out = Vec::new();
        e.opened(Instant::now());
        e.bytes(b"215;7\n", Instant::now(), SystemTime::UNIX_EPOCH, &mut out);
        let r: Vec<Reading> = out
            .into_iter()
            .filter_map(|a| match a {
                Action::Event(SourceEvent::Reading(r)) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(r[0].value, Value::Float(21.5));
        assert_eq!(r[0].unit.as_deref(), Some("°C"));
        assert_eq!(r[0].ts, SystemTime::UNIX_EPOCH);
        assert_eq!(r[1].value, Value::UInt(7));
    }

    #[test]
    fn header_line_does_not_become_text_readings() {
        let spec = ParserSpec::Csv(CsvOptions {
            columns: vec!["t".into(), "h".into()],
            separator: ";".into(),
            allow_extra_columns: false,
        });
        let parser = Parser::build(&spec, &["t", "h"]).unwrap();
        let points = (0..2)
            .map(|i| PointRt {
                ty: parser.natural_type(i),
                ..point(["t", "h"][i])
            })
            .collect();
        let dev = DeviceRt {
            name: "w".into(),
            parser,
            matcher: None,
            points,
            poll: None,
            online: None,
        };
        let mut e = engine(vec![dev], None);
        let mut out = Vec::new();
        e.opened(Instant::now());
        e.bytes(
            b"t;h\n21.5;40\n",
            Instant::now(),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        let (r, _, _) = split(&mut out);
        assert_eq!(
            r,
            vec![
                ("w".into(), "t".into(), Value::Float(21.5)),
                ("w".into(), "h".into(), Value::Float(40.0))
            ]
        );
        assert_eq!(SerialStats::get(&e.stats().conversion), 2);
    }
}
