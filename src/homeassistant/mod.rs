//! Home Assistant MQTT discovery (`homeassistant: {enabled: true, prefix: homeassistant}`).
//!
//! At start and on every reload the gateway queues a retained discovery config for each
//! catalogued point ([`payload`]), through the outbox like everything else, so the configs
//! survive a broker outage and reach the broker before the readings that follow them.
//!
//! What was announced is recorded in `{data_dir}/homeassistant.json`. Entities that are no
//! longer in the map (a device or point removed, on reload or across a restart, or discovery
//! switched off) get an empty retained config, which is how HA deletes an entity. Without the
//! record a removed device would stay in HA forever, since the broker keeps its config.

pub mod payload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::format::Formatter;
use crate::message::{Message, QoS};
use crate::outbox::Outbox;
use crate::sources::CatalogEntry;

pub use payload::{Announcement, announcements};

/// File in the data directory listing the discovery topics announced last.
pub const RECORD_FILE: &str = "homeassistant.json";

/// Errors of discovery publishing.
#[derive(Debug, thiserror::Error)]
pub enum HomeAssistantError {
    #[error("{0}: {1}")]
    Record(PathBuf, std::io::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// `homeassistant:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// On when the section is present, unless set false.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// HA's discovery prefix (HA's default is `homeassistant`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn yes() -> bool {
    true
}

fn default_prefix() -> String {
    "homeassistant".into()
}

impl HomeAssistantConfig {
    /// Problems as (relative key, message), like the other sections.
    pub fn validate(&self) -> Vec<(String, String)> {
        let p = &self.prefix;
        let levels_ok = p.split('/').all(|l| !l.is_empty());
        if p.is_empty() || p.contains(['+', '#', '\0']) || !levels_ok {
            vec![(
                "prefix".into(),
                format!("`{p}` is not a usable topic prefix: no wildcards or empty levels"),
            )]
        } else {
            Vec::new()
        }
    }
}

/// The discovery prefix in force for a map, or `None` when discovery is off.
pub fn prefix_of(config: &Config) -> Option<&str> {
    config
        .homeassistant
        .as_ref()
        .filter(|h| h.enabled)
        .map(|h| h.prefix.as_str())
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORD_FILE)
}

/// Topics announced last time; an unreadable record counts as empty (logged).
pub fn read_record(data_dir: &Path) -> BTreeSet<String> {
    let path = record_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "Home Assistant record unreadable; entities removed from the map while it was broken stay in HA");
            BTreeSet::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the Home Assistant record");
            BTreeSet::new()
        }
    }
}

/// Written to a temporary file and renamed, so a power cut leaves the old or the new record.
fn write_record(data_dir: &Path, topics: &BTreeSet<String>) -> Result<(), HomeAssistantError> {
    let path = record_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(topics).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(|e| HomeAssistantError::Record(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| HomeAssistantError::Record(path, e))
}

/// What to publish for a map given the previous record: the configs, then an empty retained
/// config for every topic announced before and not any more.
pub fn plan(
    config: &Config,
    catalog: &[CatalogEntry],
    formatter: &Formatter,
    previous: &BTreeSet<String>,
) -> (Vec<Announcement>, Vec<String>) {
    let current = match prefix_of(config) {
        Some(prefix) => announcements(config, prefix, catalog, formatter),
        None => Vec::new(),
    };
    let now: BTreeSet<&str> = current.iter().map(|a| a.topic.as_str()).collect();
    let removed = previous
        .iter()
        .filter(|t| !now.contains(t.as_str()))
        .cloned()
        .collect();
    (current, removed)
}

/// Queues discovery configs and removals, and records what is announced now.
pub async fn publish(
    config: &Config,
    catalog: &[CatalogEntry],
    formatter: &Formatter,
    outbox: &Outbox,
) -> Result<(), HomeAssistantError> {
    let dir = &config.gateway.data_dir;
    let previous = read_record(dir);
    let (current, removed) = plan(config, catalog, formatter, &previous);
    if current.is_empty() && removed.is_empty() {
        return Ok(());
    }
    for topic in &removed {
        outbox
            .push(Message::new(topic.clone(), "", QoS::AtLeastOnce, true))
            .await?;
    }
    for a in &current {
        let payload = a.payload.to_string();
        outbox
            .push(Message::new(
                a.topic.clone(),
                payload,
                QoS::AtLeastOnce,
                true,
            ))
            .await?;
    }
    write_record(dir, &current.iter().map(|a| a.topic.clone()).collect())?;
    tracing::info!(
        announced = current.len(),
        removed = removed.len(),
        "Home Assistant discovery queued"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new("map.yaml"), yaml, &|_| None)
    }

    fn plan_for(yaml: &str, previous: &[&str]) -> (Vec<String>, Vec<String>) {
        let cfg = load(yaml).unwrap();
        let built = crate::sources::build_all(&cfg).unwrap_or_else(|_| panic!("sources"));
        let f = Formatter::new(&cfg, &built.catalog);
        let prev = previous.iter().map(|s| s.to_string()).collect();
        let (cur, removed) = plan(&cfg, &built.catalog, &f, &prev);
        (cur.into_iter().map(|a| a.topic).collect(), removed)
    }

    const A: &str = "homeassistant/sensor/gw/a_counter/config";
    const B: &str = "homeassistant/sensor/gw/b_counter/config";

    #[test]
    fn entities_no_longer_in_the_map_are_removed() {
        let yaml =
            "gateway: {id: gw}\nhomeassistant: {}\ndevices:\n  - {name: a, type: synthetic}\n";
        let (cur, removed) = plan_for(yaml, &[A, B]);
        assert!(cur.contains(&A.to_string()), "{cur:?}");
        assert_eq!(cur.len(), 3, "two gateway entities and a_counter: {cur:?}");
        assert_eq!(removed, vec![B.to_string()]);
    }

    #[test]
    fn switching_discovery_off_removes_everything() {
        let yaml = "gateway: {id: gw}\nhomeassistant: {enabled: false}\ndevices:\n  - {name: a, type: synthetic}\n";
        let (cur, removed) = plan_for(yaml, &[A, B]);
        assert!(cur.is_empty());
        assert_eq!(removed, vec![A.to_string(), B.to_string()]);
        let (cur, removed) = plan_for("gateway: {id: gw}\n", &[]);
        assert!(cur.is_empty() && removed.is_empty());
    }

    #[test]
    fn section_errors_are_located() {
        let err = load("gateway: {id: gw}\nhomeassistant:\n  enabled: true\n  prefx: ha\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("map.yaml:4:3: "), "{err}");
        assert!(err.contains("unknown field `prefx`"), "{err}");
        let err = load("gateway: {id: gw}\nhomeassistant: {prefix: 'ha/#'}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a usable topic prefix"), "{err}");
        assert!(err.contains("homeassistant.prefix"), "{err}");
        let cfg = load("gateway: {id: gw}\nhomeassistant: {}\n").unwrap();
        assert_eq!(prefix_of(&cfg), Some("homeassistant"));
    }
}
