//! The short summary `edgebus check` prints for a valid device map. It never shows secrets.

use std::fmt::Write;

use crate::config::Config;
use crate::format::Formatter;
use crate::sources::Built;

pub fn summary(cfg: &Config, built: &Built) -> String {
    let f = Formatter::new(cfg, &built.catalog);
    let mut s = String::new();
    let devices = cfg.devices.iter().filter(|d| d.common.enabled).count();
    let _ = writeln!(
        s,
        "{}: ok — gateway `{}`, {} bus{}, {} device{}, {} point{}, upstream {}",
        cfg.file.display(),
        cfg.gateway.id,
        cfg.buses.len(),
        if cfg.buses.len() == 1 { "" } else { "es" },
        devices,
        if devices == 1 { "" } else { "s" },
        built.catalog.len(),
        if built.catalog.len() == 1 { "" } else { "s" },
        cfg.upstream.url,
    );
    if let Some(bind) = cfg.metrics.as_ref().and_then(|m| m.bind) {
        let _ = writeln!(s, "  metrics: http://{bind}/metrics");
        if cfg!(not(feature = "prometheus")) {
            let _ = writeln!(
                s,
                "    (not served: this build has no Prometheus endpoint, cargo feature `prometheus`)"
            );
        }
    }
    if let Some(prefix) = crate::homeassistant::prefix_of(cfg) {
        let _ = writeln!(
            s,
            "  Home Assistant discovery under {prefix}/ ({} entities)",
            built.catalog.len() + 2
        );
    }
    for b in &cfg.buses {
        let n = cfg
            .devices
            .iter()
            .filter(|d| d.common.bus.as_deref() == Some(b.name.as_str()))
            .count();
        let _ = writeln!(
            s,
            "  bus {} ({}): {} device{}",
            b.name,
            b.kind,
            n,
            if n == 1 { "" } else { "s" }
        );
    }
    for d in &cfg.devices {
        let on = d
            .common
            .bus
            .as_deref()
            .or(d.common.kind.as_deref())
            .unwrap_or("?");
        let off = if d.common.enabled { "" } else { " [disabled]" };
        let _ = writeln!(s, "  device {} ({on}){off}", d.common.name);
        for e in built.catalog.iter().filter(|e| *e.device == *d.common.name) {
            let _ = writeln!(
                s,
                "    {} -> {}",
                e.point.name,
                f.topic_of(&e.device, &e.point.name)
            );
        }
    }
    s
}
