//! MQTT-SN over a serial line, framed like mqtt-sn-tools' serial bridge: no extra framing,
//! each message is delimited by its own length field (1 or 3 octets). A forwarder header
//! (0xFE) is followed by the message it carries. Garbage is skipped a byte at a time, and a
//! frame left incomplete for longer than `gap` is dropped, so the reader resynchronises
//! after line noise.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::codec::ENCAPSULATED;
use super::gateway::count_drop;

/// Splits a byte stream into MQTT-SN frames (sans-IO).
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max: usize,
    gap: Duration,
    last: Option<Instant>,
}

/// Length of the message (or forwarder header + message) at the start of `b`:
/// `Ok(Some(n))` complete length known, `Ok(None)` need more bytes, `Err(())` not a frame.
fn frame_len(b: &[u8], max: usize) -> Result<Option<usize>, ()> {
    let msg_len = |b: &[u8]| -> Result<Option<usize>, ()> {
        match b.first() {
            None => Ok(None),
            Some(0) => Err(()),
            Some(1) => {
                if b.len() < 3 {
                    return Ok(None);
                }
                let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
                if n < 4 { Err(()) } else { Ok(Some(n)) }
            }
            Some(&n) => Ok(Some(usize::from(n))),
        }
    };
    if b.len() >= 2 && b[1] == ENCAPSULATED && b[0] != 1 {
        let h = usize::from(b[0]);
        if h < 3 {
            return Err(());
        }
        if b.len() <= h {
            return Ok(None);
        }
        return match msg_len(&b[h..])? {
            Some(n) if h + n <= max => Ok(Some(h + n)),
            Some(_) => Err(()),
            None => Ok(None),
        };
    }
    match msg_len(b)? {
        Some(n) if n <= max => Ok(Some(n)),
        Some(_) => Err(()),
        None => Ok(None),
    }
}

impl Framer {
    pub fn new(max: usize, gap: Duration) -> Framer {
        Framer {
            buf: BytesMut::new(),
            max: max.max(4),
            gap,
            last: None,
        }
    }

    /// Adds bytes read at `now`; returns the complete frames.
    pub fn push(&mut self, now: Instant, bytes: &[u8]) -> Vec<Vec<u8>> {
        if let Some(last) = self.last
            && !self.buf.is_empty()
            && now.saturating_duration_since(last) > self.gap
        {
            count_drop("serial_stale_partial");
            self.buf.clear();
        }
        self.last = Some(now);
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match frame_len(&self.buf, self.max) {
                Ok(Some(n)) if self.buf.len() >= n => {
                    out.push(self.buf.split_to(n).to_vec());
                }
                Ok(_) => break,
                Err(()) => {
                    count_drop("serial_resync");
                    self.buf.advance(1);
                }
            }
        }
        // never hold more than one frame's worth
        if self.buf.len() > self.max {
            let extra = self.buf.len() - self.max;
            self.buf.advance(extra);
        }
        out
    }
}

/// Runs one serial link: frames read go to `inbound` tagged with `index`, datagrams from
/// `outbound` are written as they are. Returns when the stream ends or errs.
pub async fn run_link<S>(
    stream: S,
    index: u16,
    max_packet: usize,
    inbound: mpsc::Sender<(super::Peer, Vec<u8>)>,
    mut outbound: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = Framer::new(max_packet, Duration::from_millis(500));
    let mut buf = vec![0u8; 512];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                for f in framer.push(Instant::now(), &buf[..n]) {
                    if inbound.send((super::Peer::Serial(index), f)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            d = outbound.recv() => {
                let Some(d) = d else { return Ok(()) };
                wr.write_all(&d).await?;
                wr.flush().await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined() {
        let t = Instant::now();
        let mut f = Framer::new(256, Duration::from_millis(100));
        // two messages in one read, the third split across reads
        let mut out = f.push(t, &[2, 0x17, 4, 0x18, 0, 5, 3]);
        assert_eq!(out, vec![vec![2, 0x17], vec![4, 0x18, 0, 5]]);
        out = f.push(t, &[0x05, 0]);
        assert_eq!(out, vec![vec![3, 0x05, 0]]);
        // long form
        let mut long = vec![1, 0, 6, 0x09, 7, 7];
        out = f.push(t, &long);
        assert_eq!(out, vec![long.clone()]);
        // forwarder header + message
        long = vec![4, 0xFE, 0, 0xAA, 2, 0x16];
        out = f.push(t, &long);
        assert_eq!(out, vec![long]);
    }

    #[test]
    fn resyncs_after_garbage_and_gaps() {
        let t = Instant::now();
        let mut f = Framer::new(64, Duration::from_millis(100));
        // zero bytes are skipped; then a valid ping
        assert_eq!(f.push(t, &[0, 0, 2, 0x17]), vec![vec![2, 0x17]]);
        // a partial frame, then silence, then a fresh frame
        assert!(f.push(t, &[10, 0x0C, 1]).is_empty());
        let later = t + Duration::from_millis(500);
        assert_eq!(f.push(later, &[2, 0x17]), vec![vec![2, 0x17]]);
        // a length above max is skipped
        let out = f.push(later, &[200, 2, 0x17]);
        assert_eq!(out, vec![vec![2, 0x17]]);
    }

    #[tokio::test]
    async fn link_over_a_duplex_stream() {
        let (ours, mut theirs) = tokio::io::duplex(256);
        let (in_tx, mut in_rx) = mpsc::channel(8);
        let (out_tx, out_rx) = mpsc::channel(8);
        let task = tokio::spawn(run_link(ours, 3, 256, in_tx, out_rx));
        theirs.write_all(&[2, 0x17, 3, 0x05]).await.unwrap();
        theirs.write_all(&[0]).await.unwrap();
        let (peer, f) = in_rx.recv().await.unwrap();
        assert_eq!((peer, f), (crate::mqttsn::Peer::Serial(3), vec![2, 0x17]));
        assert_eq!(in_rx.recv().await.unwrap().1, vec![3, 0x05, 0]);
        out_tx.send(vec![2, 0x16]).await.unwrap();
        let mut got = [0u8; 2];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [2, 0x16]);
        drop(theirs);
        task.await.unwrap().unwrap();
    }
}
