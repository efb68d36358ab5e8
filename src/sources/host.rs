//! `type: host` — the gateway's own machine: CPU temperature, load, memory, disk, uptime.
//! Useful on every Pi (a throttling CPU explains many field problems), and it gives the demo
//! real readings without any device attached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{BuiltSource, CatalogEntry, Kind, Source, SourceContext, SourceEvent};
use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec, Point, PointCommon};
use crate::reading::{Reading, Value};

pub const KIND: Kind = Kind {
    bus_types: &[],
    device_type: Some("host"),
    build,
};

/// Every metric the host source knows, with its unit.
pub const METRICS: &[(&str, Option<&str>)] = &[
    ("cpu_temperature", Some("°C")),
    ("load_1m", None),
    ("load_5m", None),
    ("load_15m", None),
    ("memory_available", Some("B")),
    ("memory_used_percent", Some("%")),
    ("disk_free", Some("B")),
    ("disk_used_percent", Some("%")),
    ("uptime", Some("s")),
];

const DEFAULT_POLL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
struct HostPoint {}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostDevice {
    /// Metrics to publish (default: all).
    #[serde(default)]
    points: Option<Vec<Point<HostPoint>>>,
    /// File system whose free space is reported (default: the data directory's).
    #[serde(default)]
    disk_path: Option<PathBuf>,
    /// Root of the sysfs/procfs tree (tests point it at a fake tree).
    #[serde(default)]
    root: Option<PathBuf>,
}

fn build(
    config: &Config,
    _bus: Option<&BusSpec>,
    devices: &[&DeviceSpec],
) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for d in devices {
        let dev: HostDevice = match d.parse() {
            Ok(v) => v,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        let points: Vec<PointCommon> = match dev.points {
            Some(ps) => ps.into_iter().map(|p| p.common).collect(),
            None => METRICS
                .iter()
                .map(|(n, _)| PointCommon {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
        };
        let mut catalog = Vec::new();
        for (i, p) in points.iter().enumerate() {
            let path = d.path.key("points").index(i);
            let Some((_, unit)) = METRICS.iter().find(|(n, _)| *n == p.name) else {
                let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
                issues.push(ConfigIssue::new(
                    path.key("name"),
                    format!(
                        "unknown host metric `{}` (known: {})",
                        p.name,
                        names.join(", ")
                    ),
                ));
                continue;
            };
            let mut p = p.clone();
            if p.unit.is_none() {
                p.unit = unit.map(str::to_string);
            }
            catalog.push(CatalogEntry {
                device: Arc::from(d.common.name.as_str()),
                point: p,
                path,
                kind: Default::default(),
            });
        }
        let root = dev.root.unwrap_or_else(|| PathBuf::from("/"));
        let src = HostSource {
            device: Arc::from(d.common.name.as_str()),
            poll: d.common.poll.unwrap_or(DEFAULT_POLL),
            points: catalog.iter().map(|c| c.point.clone()).collect(),
            disk_path: dev
                .disk_path
                .unwrap_or_else(|| config.gateway.data_dir.clone()),
            root,
        };
        out.push(BuiltSource {
            source: Box::new(src),
            catalog,
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Polls the host's metrics.
pub struct HostSource {
    device: Arc<str>,
    poll: Duration,
    points: Vec<PointCommon>,
    disk_path: PathBuf,
    root: PathBuf,
}

impl Source for HostSource {
    fn name(&self) -> &str {
        &self.device
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()> {
        async move {
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = std::collections::HashSet::new();
            let _ = ctx
                .events
                .send(SourceEvent::Availability {
                    device: self.device.clone(),
                    online: true,
                })
                .await;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let sample = sample(&self.root, &self.disk_path);
                for p in &self.points {
                    let Some(v) = sample.get(&p.name) else {
                        if warned.insert(p.name.clone()) {
                            tracing::info!(device = %self.device, point = %p.name, "host metric not available on this machine; skipping it");
                        }
                        continue;
                    };
                    let value = if p.has_scaling() { p.apply_scale(*v) } else { *v };
                    let value = match p.name.as_str() {
                        "memory_available" | "disk_free" | "uptime" if !p.has_scaling() => Value::UInt(value.max(0.0) as u64),
                        _ => Value::Float(value),
                    };
                    let r = Reading::new(self.device.clone(), p.name.as_str(), value)
                        .with_unit(p.unit.as_deref().map(Arc::from));
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        r = ctx.events.send(SourceEvent::Reading(r)) => if r.is_err() { return },
                    }
                }
            }
        }
        .boxed()
    }
}

/// Reads every metric it can; a missing file just leaves that metric out.
pub fn sample(
    root: &std::path::Path,
    disk: &std::path::Path,
) -> std::collections::HashMap<String, f64> {
    let mut m = std::collections::HashMap::new();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    if let Some(t) =
        read("sys/class/thermal/thermal_zone0/temp").and_then(|s| s.trim().parse::<f64>().ok())
    {
        m.insert("cpu_temperature".into(), t / 1000.0);
    }
    if let Some(l) = read("proc/loadavg") {
        let f: Vec<f64> = l
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [a, b, c] = f[..] {
            m.insert("load_1m".into(), a);
            m.insert("load_5m".into(), b);
            m.insert("load_15m".into(), c);
        }
    }
    if let Some(mi) = read("proc/meminfo") {
        let kb = |key: &str| {
            mi.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let (Some(total), Some(avail)) = (kb("MemTotal:"), kb("MemAvailable:")) {
            m.insert("memory_available".into(), avail * 1024.0);
            if total > 0.0 {
                m.insert(
                    "memory_used_percent".into(),
                    round2(100.0 * (total - avail) / total),
                );
            }
        }
    }
    if let Some(u) = read("proc/uptime").and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    }) {
        m.insert("uptime".into(), u.floor());
    }
    if let Some((free, total)) = disk_space(disk) {
        m.insert("disk_free".into(), free);
        if total > 0.0 {
            m.insert(
                "disk_used_percent".into(),
                round2(100.0 * (total - free) / total),
            );
        }
    }
    m
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Free (for unprivileged users) and total bytes of the file system holding `path`, or of
/// its nearest existing ancestor (the data directory may not exist yet).
fn disk_space(path: &std::path::Path) -> Option<(f64, f64)> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we own; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let frsize = st.f_frsize as f64;
        Some((st.f_bavail as f64 * frsize, st.f_blocks as f64 * frsize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("sys/class/thermal/thermal_zone0")).unwrap();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(r.join("sys/class/thermal/thermal_zone0/temp"), "48312\n").unwrap();
        std::fs::write(r.join("proc/loadavg"), "0.52 0.31 0.20 1/234 5678\n").unwrap();
        std::fs::write(
            r.join("proc/meminfo"),
            "MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  250 kB\n",
        )
        .unwrap();
        std::fs::write(r.join("proc/uptime"), "12345.67 100.0\n").unwrap();
        let m = sample(r, r);
        assert_eq!(m["cpu_temperature"], 48.312);
        assert_eq!(m["load_1m"], 0.52);
        assert_eq!(m["load_15m"], 0.20);
        assert_eq!(m["memory_available"], 256_000.0);
        assert_eq!(m["memory_used_percent"], 75.0);
        assert_eq!(m["uptime"], 12345.0);
        assert!(m["disk_free"] > 0.0);
    }

    #[test]
    fn garbage_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(r.join("proc/loadavg"), "\u{0}\u{1}garbage").unwrap();
        std::fs::write(r.join("proc/meminfo"), "MemTotal: x kB").unwrap();
        let m = sample(r, r);
        assert!(!m.contains_key("load_1m"));
        assert!(!m.contains_key("memory_available"));
    }
}
