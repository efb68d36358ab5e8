//! GATT (connected devices): characteristic value decoding and the reconnect backoff.
//! Pure: the btleplug connection lives in the scanner module behind our trait.

use std::time::Duration;

use serde::Deserialize;

use super::config::{ByteOrder, GattPoint};
use crate::reading::Value;

/// Value types of a characteristic, as for Modbus points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U24,
    I24,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// IEEE-11073 16-bit SFLOAT (Health Thermometer and friends).
    Sfloat,
    /// IEEE-11073 32-bit FLOAT.
    Float11073,
    /// UTF-8 text (the rest of the value).
    String,
    /// The rest of the value as hex.
    Hex,
}

impl ValueType {
    pub fn size(self) -> Option<usize> {
        Some(match self {
            ValueType::Bool | ValueType::U8 | ValueType::I8 => 1,
            ValueType::U16 | ValueType::I16 | ValueType::Sfloat => 2,
            ValueType::U24 | ValueType::I24 => 3,
            ValueType::U32 | ValueType::I32 | ValueType::F32 | ValueType::Float11073 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
            ValueType::String | ValueType::Hex => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GattError {
    #[error("value has {got} bytes, need {need} at position {at}")]
    TooShort { got: usize, need: usize, at: usize },
    #[error("special value (NaN / not available)")]
    NotAvailable,
}

/// Decodes one characteristic value per the point's type, position and byte order.
pub fn decode_value(p: &GattPoint, data: &[u8]) -> Result<Value, GattError> {
    let at = p.at;
    let tail = data.get(at..).unwrap_or(&[]);
    let Some(n) = p.value_type.size() else {
        return Ok(match p.value_type {
            ValueType::String => Value::Text(
                String::from_utf8_lossy(tail)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            _ => Value::Text(hex::encode(tail)),
        });
    };
    let Some(b) = tail.get(..n) else {
        return Err(GattError::TooShort {
            got: data.len(),
            need: n,
            at,
        });
    };
    let mut le = b.to_vec();
    if p.byte_order == ByteOrder::Big {
        le.reverse();
    }
    let u = le.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let s = |bits: u32| ((u << (64 - bits)) as i64) >> (64 - bits);
    Ok(match p.value_type {
        ValueType::Bool => Value::Bool(u != 0),
        ValueType::U8 | ValueType::U16 | ValueType::U24 | ValueType::U32 | ValueType::U64 => {
            Value::UInt(u)
        }
        ValueType::I8 => Value::Int(s(8)),
        ValueType::I16 => Value::Int(s(16)),
        ValueType::I24 => Value::Int(s(24)),
        ValueType::I32 => Value::Int(s(32)),
        ValueType::I64 => Value::Int(u as i64),
        ValueType::F32 => Value::Float(f64::from(f32::from_bits(u as u32))),
        ValueType::F64 => Value::Float(f64::from_bits(u)),
        ValueType::Sfloat => sfloat(u as u16)?,
        ValueType::Float11073 => float11073(u as u32)?,
        ValueType::String | ValueType::Hex => return Err(GattError::NotAvailable),
    })
}

/// 4-bit signed exponent, 12-bit signed mantissa; 0x07FF NaN, 0x0800 NRes, 0x07FE/0x0802 ±inf.
fn sfloat(raw: u16) -> Result<Value, GattError> {
    let m = raw & 0x0FFF;
    if matches!(m, 0x07FE..=0x0802) {
        return Err(GattError::NotAvailable);
    }
    let mant = ((m << 4) as i16 >> 4) as f64;
    let exp = ((raw as i16) >> 12) as i32;
    Ok(Value::Float(round_sig(mant * 10f64.powi(exp), exp)))
}

/// 8-bit signed exponent, 24-bit signed mantissa; 0x7FFFFF NaN, 0x800000 NRes.
fn float11073(raw: u32) -> Result<Value, GattError> {
    let m = raw & 0x00FF_FFFF;
    if matches!(m, 0x7FFFFE..=0x800002) {
        return Err(GattError::NotAvailable);
    }
    let mant = (((m << 8) as i32) >> 8) as f64;
    let exp = (raw as i32) >> 24;
    Ok(Value::Float(round_sig(mant * 10f64.powi(exp), exp)))
}

fn round_sig(v: f64, exp: i32) -> f64 {
    if exp >= 0 {
        return v;
    }
    let p = 10f64.powi(-exp);
    (v * p).round() / p
}

/// Exponential backoff with a cap, for reconnecting to a device that went away.
/// `next()` gives the wait before the next attempt; `reset()` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Option<Duration>,
    pub failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: None,
            failures: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = match self.current {
            None => self.initial,
            Some(c) => (c * 2).min(self.max),
        };
        self.current = Some(d);
        d
    }

    pub fn reset(&mut self) {
        self.current = None;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(t: ValueType, at: usize, order: ByteOrder) -> GattPoint {
        GattPoint {
            service: "180f".into(),
            characteristic: "2a19".into(),
            value_type: t,
            at,
            byte_order: order,
            notify: false,
            poll: None,
        }
    }

    #[test]
    fn integer_types_and_byte_order() {
        let d = [0xFE, 0xFF, 0x01, 0x80];
        assert_eq!(
            decode_value(&pt(ValueType::U8, 0, ByteOrder::Little), &d),
            Ok(Value::UInt(0xFE))
        );
        assert_eq!(
            decode_value(&pt(ValueType::I8, 0, ByteOrder::Little), &d),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            decode_value(&pt(ValueType::I16, 0, ByteOrder::Little), &d),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            decode_value(&pt(ValueType::U16, 0, ByteOrder::Big), &d),
            Ok(Value::UInt(0xFEFF))
        );
        assert_eq!(
            decode_value(&pt(ValueType::I16, 2, ByteOrder::Big), &d),
            Ok(Value::Int(0x0180))
        );
        assert_eq!(
            decode_value(&pt(ValueType::I24, 1, ByteOrder::Little), &d),
            Ok(Value::Int(-0x7ffe01))
        );
        assert_eq!(
            decode_value(&pt(ValueType::U32, 0, ByteOrder::Little), &d),
            Ok(Value::UInt(0x8001FFFE))
        );
        assert_eq!(
            decode_value(&pt(ValueType::I32, 0, ByteOrder::Little), &d),
            Ok(Value::Int(0x8001FFFEu32 as i32 as i64))
        );
        assert_eq!(
            decode_value(&pt(ValueType::Bool, 3, ByteOrder::Little), &d),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            decode_value(&pt(ValueType::U16, 3, ByteOrder::Little), &d),
            Err(GattError::TooShort {
                got: 4,
                need: 2,
                at: 3
            })
        );
        assert!(decode_value(&pt(ValueType::U8, 99, ByteOrder::Little), &d).is_err());
    }

    #[test]
    fn floats_text_and_medical_floats() {
        let f = 21.5f32.to_le_bytes();
        assert_eq!(
            decode_value(&pt(ValueType::F32, 0, ByteOrder::Little), &f),
            Ok(Value::Float(21.5))
        );
        let mut b = 21.5f32.to_be_bytes().to_vec();
        b.insert(0, 9);
        assert_eq!(
            decode_value(&pt(ValueType::F32, 1, ByteOrder::Big), &b),
            Ok(Value::Float(21.5))
        );
        assert_eq!(
            decode_value(&pt(ValueType::String, 1, ByteOrder::Little), b"xHi\0"),
            Ok(Value::Text("Hi".into()))
        );
        assert_eq!(
            decode_value(&pt(ValueType::Hex, 0, ByteOrder::Little), &[0xab]),
            Ok(Value::Text("ab".into()))
        );
        // SFLOAT 0xF16E: exponent -1, mantissa 0x16E = 366 -> 36.6
        assert_eq!(
            decode_value(&pt(ValueType::Sfloat, 0, ByteOrder::Little), &[0x6E, 0xF1]),
            Ok(Value::Float(36.6))
        );
        assert_eq!(
            decode_value(&pt(ValueType::Sfloat, 0, ByteOrder::Little), &[0xFF, 0x07]),
            Err(GattError::NotAvailable)
        );
        // FLOAT 0xFE000E42: exponent -2, mantissa 3650 -> 36.5
        assert_eq!(
            decode_value(
                &pt(ValueType::Float11073, 0, ByteOrder::Little),
                &[0x42, 0x0E, 0x00, 0xFE]
            ),
            Ok(Value::Float(36.5))
        );
    }

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let seq: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.failures, 6);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.failures, 1);
    }
}

/// A connected device's GATT points, ready to run.
#[derive(Debug, Clone)]
pub struct GattDevice {
    pub name: std::sync::Arc<str>,
    pub mac: super::advert::Mac,
    /// (point, how to read it, service uuid, characteristic uuid)
    pub points: Vec<(crate::config::PointCommon, GattPoint, u128, u128)>,
    pub default_poll: Duration,
    /// Publish availability from the connection state (devices without advert decoding).
    pub availability: bool,
}

/// Keeps one device connected: polls and subscribes, reconnects with backoff. Returns on
/// shutdown only.
pub async fn run_device(
    dev: GattDevice,
    client: std::sync::Arc<dyn super::scanner::GattClient>,
    events: tokio::sync::mpsc::Sender<crate::sources::SourceEvent>,
    shutdown: tokio_util::sync::CancellationToken,
    mut backoff: Backoff,
) {
    use crate::reading::Reading;
    use crate::sources::SourceEvent;
    use futures::StreamExt;
    use tokio::time::Instant;

    let mut online: Option<bool> = None;
    let send = |ev: SourceEvent| {
        let events = events.clone();
        async move { events.send(ev).await.is_ok() }
    };
    let publish = |i: usize, data: &[u8]| -> Option<SourceEvent> {
        let (p, g, _, _) = &dev.points[i];
        match decode_value(g, data) {
            Ok(v) => {
                let v = match v.as_f64() {
                    Some(x) if p.has_scaling() && !matches!(v, Value::Bool(_)) => {
                        Value::Float(p.apply_scale(x))
                    }
                    _ => v,
                };
                let unit = p.unit.as_deref().map(std::sync::Arc::from);
                Some(SourceEvent::Reading(
                    Reading::new(dev.name.clone(), p.name.as_str(), v).with_unit(unit),
                ))
            }
            Err(e) => {
                metrics::counter!("edgebus_ble_gatt_errors_total", "device" => dev.name.to_string(), "reason" => "decode").increment(1);
                tracing::warn!(device = %dev.name, point = %p.name, error = %e, "cannot decode GATT value");
                None
            }
        }
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(60), client.connect(dev.mac)) => r,
        };
        let failure = match connected {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("connect timed out".to_string()),
        };
        if let Some(why) = failure {
            metrics::counter!("edgebus_ble_gatt_errors_total", "device" => dev.name.to_string(), "reason" => "connect").increment(1);
            let wait = backoff.next_delay();
            if backoff.failures == 1 {
                tracing::warn!(device = %dev.name, error = %why, retry_in = ?wait, "GATT connect failed");
            } else {
                tracing::debug!(device = %dev.name, error = %why, retry_in = ?wait, failures = backoff.failures, "GATT connect failed");
            }
            if dev.availability && online != Some(false) {
                online = Some(false);
                if !send(SourceEvent::Availability {
                    device: dev.name.clone(),
                    online: false,
                })
                .await
                {
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        backoff.reset();
        tracing::info!(device = %dev.name, "GATT connected");
        if dev.availability && online != Some(true) {
            online = Some(true);
            if !send(SourceEvent::Availability {
                device: dev.name.clone(),
                online: true,
            })
            .await
            {
                return;
            }
        }
        // Subscriptions, merged into one stream of (point index, value).
        let mut streams = Vec::new();
        let mut sub_failed = false;
        for (i, (p, _, svc, ch)) in dev.points.iter().enumerate().filter(|(_, x)| x.1.notify) {
            match client.subscribe(dev.mac, *svc, *ch).await {
                Ok(rx) => streams.push(
                    futures::stream::unfold(rx, move |mut rx| async move {
                        rx.recv().await.map(|v| ((i, v), rx))
                    })
                    .boxed(),
                ),
                Err(e) => {
                    tracing::warn!(device = %dev.name, point = %p.name, error = %e, "GATT subscribe failed");
                    sub_failed = true;
                }
            }
        }
        let has_subs = !streams.is_empty();
        let mut notifications = futures::stream::select_all(streams);
        let now = Instant::now();
        let mut due: Vec<(usize, Duration, Instant)> = dev
            .points
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.1.notify)
            .map(|(i, x)| (i, x.1.poll.unwrap_or(dev.default_poll), now))
            .collect();
        let mut lost = sub_failed;
        while !lost {
            let next = due.iter().map(|d| d.2).min();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = client.disconnect(dev.mac).await;
                    return;
                }
                _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => futures::future::pending().await } } => {
                    let now = Instant::now();
                    for slot in due.iter_mut() {
                        let (i, period, at) = *slot;
                        if at > now {
                            continue;
                        }
                        slot.2 = now + period;
                        let (_, _, svc, ch) = &dev.points[i];
                        match tokio::time::timeout(Duration::from_secs(30), client.read(dev.mac, *svc, *ch)).await {
                            Ok(Ok(data)) => {
                                if let Some(ev) = publish(i, &data)
                                    && !send(ev).await
                                {
                                    return;
                                }
                            }
                            other => {
                                let why = match other { Ok(Err(e)) => e.to_string(), _ => "read timed out".into() };
                                metrics::counter!("edgebus_ble_gatt_errors_total", "device" => dev.name.to_string(), "reason" => "read").increment(1);
                                tracing::warn!(device = %dev.name, point = %dev.points[i].0.name, error = %why, "GATT read failed; reconnecting");
                                lost = true;
                                break;
                            }
                        }
                    }
                }
                n = notifications.next(), if has_subs => match n {
                    Some((i, data)) => {
                        if let Some(ev) = publish(i, &data)
                            && !send(ev).await
                        {
                            return;
                        }
                    }
                    None => {
                        tracing::warn!(device = %dev.name, "GATT notifications ended (link lost); reconnecting");
                        lost = true;
                    }
                },
            }
        }
        let _ = client.disconnect(dev.mac).await;
        let wait = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
