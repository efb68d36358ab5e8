//! `edgebus ble scan`: list what is heard nearby, decoded, to help write the device map.
//! Local output only — nothing is published.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::ScannerSpec;
use super::advert::Mac;
use super::decode;
use super::scanner::ScanError;

#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Adapter name (`hci0`); default: the first.
    pub adapter: Option<String>,
    /// Read a replay file (`MAC RSSI HEX` lines) instead of the radio.
    pub replay: Option<PathBuf>,
    /// How long to listen.
    pub duration: Duration,
    /// Bind keys for encrypted devices.
    pub keys: HashMap<Mac, Vec<u8>>,
    /// Print every advert, not only the first and changed ones.
    pub all: bool,
    /// Also append every advert to this file as a replay line (`MAC RSSI HEX`), to test a
    /// device map later without the devices (`replay:` on the bus).
    pub record: Option<PathBuf>,
}

impl ScanOptions {
    /// Adapter and bind keys from the `ble` buses and devices of a device map, so
    /// `ble scan -c FILE` decodes encrypted devices that are already mapped.
    pub fn from_config(config: &crate::config::Config, duration: Duration) -> ScanOptions {
        let mut o = ScanOptions {
            duration,
            ..Default::default()
        };
        for b in config.buses.iter().filter(|b| b.kind == "ble") {
            if let Ok(bus) = b.parse::<super::config::BleBus>() {
                o.adapter = o.adapter.or(bus.adapter);
            }
            for d in config
                .devices
                .iter()
                .filter(|d| d.common.bus.as_deref() == Some(b.name.as_str()))
            {
                if let Ok(dev) = d.parse::<super::config::BleDevice>()
                    && let (Some(mac), Some(key)) = (
                        dev.mac,
                        dev.bind_key
                            .as_ref()
                            .and_then(|k| super::config::parse_key(k.expose())),
                    )
                {
                    o.keys.insert(mac, key);
                }
            }
        }
        o
    }
}

/// Listens for `opts.duration` and prints one line per device (again when its data
/// changes). Returns the number of distinct devices heard.
pub async fn scan_and_print(
    opts: ScanOptions,
    out: &mut (dyn Write + Send),
) -> Result<usize, ScanError> {
    let spec = match &opts.replay {
        Some(p) => ScannerSpec::Replay {
            path: p.clone(),
            interval: Duration::ZERO,
            looping: false,
        },
        None => ScannerSpec::Bluez {
            adapter: opts.adapter.clone(),
        },
    };
    let mut scanner = spec.into_scanner()?;
    scanner.start().await?;
    let deadline = tokio::time::Instant::now() + opts.duration;
    let mut last: HashMap<Option<Mac>, String> = HashMap::new();
    let io = |e: std::io::Error| ScanError::Scan(format!("writing output: {e}"));
    let mut record = match &opts.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ScanError::Replay {
                    path: p.display().to_string(),
                    source,
                })?,
        )),
        None => None,
    };
    loop {
        let adv = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            a = scanner.next_advert() => match a { Some(a) => a, None => break },
        };
        if let (Some(w), Some(mac)) = (record.as_mut(), adv.mac) {
            writeln!(
                w,
                "{mac} {} {}",
                adv.rssi.unwrap_or(0),
                hex::encode(adv.to_ad_bytes())
            )
            .map_err(io)?;
        }
        let key = adv.mac.and_then(|m| opts.keys.get(&m)).map(Vec::as_slice);
        let decoded = match decode::decode_auto(&adv, key) {
            Ok(Some((f, d))) => {
                let vals: Vec<String> = d
                    .measurements
                    .iter()
                    .map(|m| {
                        format!(
                            "{}={}{}",
                            m.name,
                            m.value,
                            m.unit.map(|u| format!(" {u}")).unwrap_or_default()
                        )
                    })
                    .collect();
                let model = d.model.as_deref().unwrap_or("");
                format!(
                    "{f} [{model}]{} {}",
                    if d.encrypted { " (encrypted)" } else { "" },
                    vals.join(", ")
                )
            }
            Ok(None) => {
                let mut parts = Vec::new();
                for (c, v) in &adv.manufacturer_data {
                    parts.push(format!("mfr 0x{c:04x}:{}", hex::encode(v)));
                }
                for (u, v) in &adv.service_data {
                    let id = super::advert::short_uuid(*u)
                        .map_or_else(|| format!("{u:032x}"), |s| format!("{s:04x}"));
                    parts.push(format!("svc {id}:{}", hex::encode(v)));
                }
                format!("unknown format {}", parts.join(" "))
            }
            Err(e) => format!(
                "{} (cannot decode: {e})",
                decode::detect(&adv).map(|f| f.as_str()).unwrap_or("?")
            ),
        };
        if !opts.all && last.get(&adv.mac) == Some(&decoded) {
            continue;
        }
        let mac = adv
            .mac
            .map(|m| m.to_string())
            .unwrap_or_else(|| "??:??:??:??:??:??".into());
        let rssi = adv
            .rssi
            .map(|r| format!("{r:>4} dBm"))
            .unwrap_or_else(|| "   ? dBm".into());
        let name = adv
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        writeln!(out, "{mac} {rssi}{name} {decoded}").map_err(io)?;
        last.insert(adv.mac, decoded);
    }
    out.flush().map_err(io)?;
    if let Some(mut w) = record {
        w.flush().map_err(io)?;
    }
    Ok(last.len())
}
