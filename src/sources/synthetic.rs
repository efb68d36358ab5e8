//! `type: synthetic` — a generator of numbered readings at a fixed rate. For load tests,
//! soak tests and checking a broker path end to end: each point's value counts up by one per
//! tick, so a consumer can prove that nothing was lost or reordered.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{BuiltSource, CatalogEntry, Kind, Source, SourceContext, SourceEvent};
use crate::config::{BusSpec, Config, ConfigIssue, DeviceSpec, PointCommon};
use crate::reading::{Reading, Value};

pub const KIND: Kind = Kind {
    bus_types: &[],
    device_type: Some("synthetic"),
    build,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyntheticDevice {
    /// Readings per tick: points `p0`, `p1`, … (default 1: a single point `counter`).
    #[serde(default = "one")]
    fanout: u32,
    /// Stop after this many ticks (default: run forever).
    #[serde(default)]
    count: Option<u64>,
    /// First value (lets a restarted test continue a sequence).
    #[serde(default)]
    start: u64,
}

fn one() -> u32 {
    1
}

const MAX_FANOUT: u32 = 10_000;

fn build(
    _: &Config,
    _: Option<&BusSpec>,
    devices: &[&DeviceSpec],
) -> Result<Vec<BuiltSource>, Vec<ConfigIssue>> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for d in devices {
        let dev: SyntheticDevice = match d.parse() {
            Ok(v) => v,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        if dev.fanout == 0 || dev.fanout > MAX_FANOUT {
            issues.push(ConfigIssue::new(
                d.path.key("fanout"),
                format!("fanout must be between 1 and {MAX_FANOUT}"),
            ));
            continue;
        }
        let names: Vec<String> = if dev.fanout == 1 {
            vec!["counter".to_string()]
        } else {
            (0..dev.fanout).map(|i| format!("p{i}")).collect()
        };
        let device: Arc<str> = Arc::from(d.common.name.as_str());
        let catalog = names
            .iter()
            .map(|n| CatalogEntry {
                device: device.clone(),
                point: PointCommon {
                    name: n.clone(),
                    ..Default::default()
                },
                path: d.path.clone(),
                kind: Default::default(),
            })
            .collect();
        out.push(BuiltSource {
            source: Box::new(Synthetic {
                device,
                interval: d.common.poll.unwrap_or(Duration::from_secs(1)),
                points: names.into_iter().map(Arc::from).collect(),
                count: dev.count,
                start: dev.start,
            }),
            catalog,
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

struct Synthetic {
    device: Arc<str>,
    interval: Duration,
    points: Vec<Arc<str>>,
    count: Option<u64>,
    start: u64,
}

impl Source for Synthetic {
    fn name(&self) -> &str {
        &self.device
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, ()> {
        async move {
            let mut tick = tokio::time::interval(self.interval.max(Duration::from_micros(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = self.start;
            let end = self.count.map(|c| self.start.saturating_add(c));
            // A generator is always reachable: say so once, like every other source.
            let online = SourceEvent::Availability {
                device: self.device.clone(),
                online: true,
            };
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                sent = ctx.events.send(online) => if sent.is_err() { return },
            }
            while end.is_none_or(|e| n < e) {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for p in &self.points {
                    let r = Reading::new(self.device.clone(), p.clone(), Value::UInt(n));
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        sent = ctx.events.send(SourceEvent::Reading(r)) => if sent.is_err() { return },
                    }
                }
                n += 1;
            }
            // Finished: wait for shutdown so the source does not look crashed.
            ctx.shutdown.cancelled().await;
        }
        .boxed()
    }
}
