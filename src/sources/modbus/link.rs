//! The wire of one bus: opening it, pacing requests (inter-request delay, slave-switch delay,
//! RTU silent interval), a timeout on every call, and dropping a Modbus TCP connection
//! after a timeout. tokio-modbus results are nested (transport error, then exception);
//! they are flattened into [`BusError`] here and every failure is counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{Timing, Transport};
use super::plan::{ReadRequest, Table};
use super::write::WriteOp;

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
    pub fn is_silence(&self) -> bool {
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

/// A read's payload.
pub enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// One bus's connection and its pacing state.
pub struct Link {
    name: Arc<str>,
    transport: Transport,
    timing: Timing,
    conn: Option<Context>,
    last_end: Instant,
    last_unit: Option<u8>,
    reconnect_wait: Duration,
    shutdown: CancellationToken,
}

impl Link {
    pub fn new(
        name: Arc<str>,
        transport: Transport,
        timing: Timing,
        shutdown: CancellationToken,
    ) -> Link {
        Link {
            name,
            transport,
            reconnect_wait: timing.reconnect_min,
            timing,
            conn: None,
            last_end: Instant::now(),
            last_unit: None,
            shutdown,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The wait before the next connect attempt; doubles up to `reconnect_max` until a
    /// connect succeeds.
    pub fn next_reconnect_wait(&mut self) -> Duration {
        let wait = self.reconnect_wait;
        self.reconnect_wait = (wait * 2).min(self.timing.reconnect_max);
        wait
    }

    /// Opens the transport (bounded by `connect_timeout`).
    pub async fn connect(&mut self) -> bool {
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
    pub async fn transact(
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
            self.count_error(device, e);
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

    pub async fn read(
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
        let out = match self.transact(device, unit, request, t).await? {
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
        };
        if let Err(e) = &out {
            self.count_error(device, e);
        }
        out
    }

    fn count_error(&self, device: &Arc<str>, e: &BusError) {
        metrics::counter!("edgebus_modbus_errors_total", "bus" => self.name.to_string(), "device" => device.to_string(), "kind" => e.kind())
            .increment(1);
    }

    /// Performs one write (two requests for a bit: read, then write the word back).
    pub async fn write(
        &mut self,
        name: &Arc<str>,
        unit: u8,
        op: WriteOp,
        t: Duration,
    ) -> Result<(), BusError> {
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
                    .transact(name, unit, Request::ReadHoldingRegisters(address, 1), t)
                    .await?
                {
                    Response::ReadHoldingRegisters(w) if w.len() == 1 => w[0],
                    other => {
                        let e = BusError::Protocol(format!("unexpected response {other:?}"));
                        self.count_error(name, &e);
                        return Err(e);
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
        self.transact(name, unit, req, t).await.map(|_| ())
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
