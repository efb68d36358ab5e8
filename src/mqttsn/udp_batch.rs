//! Moves runs of datagrams through one UDP socket with one system call (`sendmmsg`,
//! `recvmmsg`; Linux, glibc): under load the gateway hears from and answers many nodes per
//! wake-up, and a system call per datagram is a fixed cost a Pi feels. Elsewhere it falls back
//! to one call per datagram.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per system call at most.
pub const MAX_BATCH: usize = 64;

/// Sends as many of `items` as the socket takes now, in order, and returns how many went out
/// (or were dropped on an error that concerns only that datagram). Stops at `WouldBlock`.
pub fn try_send_batch(s: &UdpSocket, items: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut done = 0;
    while done < items.len() {
        let end = (done + MAX_BATCH).min(items.len());
        match send_some(s, &items[done..end]) {
            Ok(n) => done += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // The error belongs to the first datagram of the call (sendmmsg reports an error
            // only when nothing was sent): drop that one, go on with the rest.
            Err(e) => {
                super::gateway::count_drop("udp_send_error");
                tracing::debug!(peer = %items[done].0, error = %e, "mqttsn: UDP send failed");
                done += 1;
            }
        }
    }
    if done == 0 && !items.is_empty() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(done)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn send_some(s: &UdpSocket, items: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
        items.iter().map(|(a, _)| raw_addr(a)).collect();
    let mut iovs: Vec<libc::iovec> = items
        .iter()
        .map(|(_, b)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = addrs
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|((addr, len), iov)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *len;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = s.as_raw_fd();
    s.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: `msgs` points at `addrs` and `iovs`, which outlive the call, and the
        // iovecs at the caller's byte slices; the kernel only reads them.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn send_some(s: &UdpSocket, items: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let (to, bytes) = items[0];
    s.try_send_to(bytes, to).map(|_| 1)
}

/// A socket address in the form the kernel takes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn raw_addr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid, and it is large and aligned
    // enough for both sockaddr_in and sockaddr_in6.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: see above; the write stays within the storage.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: see above; the write stays within the storage.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// Receive slots: one datagram of up to `slot` bytes each, about 64 KiB in all.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    from: Vec<SocketAddr>,
}

impl RecvBatch {
    /// Slots of `slot` bytes (the largest datagram accepted plus one, so a larger one shows).
    pub fn new(slot: usize) -> RecvBatch {
        let slot = slot.max(1);
        let n = (64 * 1024 / slot).clamp(1, 32);
        RecvBatch {
            slot,
            data: vec![0; slot * n],
            lens: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
        }
    }

    /// Datagram `i` of the last receive and its source.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let len = *self.lens.get(i)?;
        let from = *self.from.get(i)?;
        let start = i * self.slot;
        Some((from, &self.data[start..start + len.min(self.slot)]))
    }

    /// Receives what is queued now, up to the number of slots; `WouldBlock` when nothing is.
    pub fn try_recv(&mut self, s: &UdpSocket) -> io::Result<usize> {
        self.lens.clear();
        self.from.clear();
        recv_some(s, self)
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn recv_some(s: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = b.data.len() / b.slot;
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; n];
    let mut iovs: Vec<libc::iovec> = b
        .data
        .chunks_mut(b.slot)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = addrs
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(addr, iov)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = s.as_raw_fd();
    let got = s.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: `msgs` points at `addrs` and `iovs`, and the iovecs at disjoint slots of
        // `b.data`; all outlive the call and the kernel writes within their lengths.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    })?;
    for (m, addr) in msgs.iter().zip(addrs.iter()).take(got) {
        // An address the kernel would not give for a UDP socket: the datagram is skipped.
        let Some(from) = from_raw(addr) else { continue };
        b.lens.push(m.msg_len as usize);
        b.from.push(from);
    }
    Ok(b.lens.len())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn recv_some(s: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
    let (n, from) = s.try_recv_from(&mut b.data[..b.slot])?;
    b.lens.push(n);
    b.from.push(from);
    Ok(1)
}

/// The address the kernel filled in, if IPv4 or IPv6.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn from_raw(st: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(st.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender and a receiver on loopback, for each address family that can bind here.
    async fn pairs() -> Vec<(UdpSocket, UdpSocket)> {
        let mut out = Vec::new();
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            match (UdpSocket::bind(bind).await, UdpSocket::bind(bind).await) {
                (Ok(tx), Ok(rx)) => out.push((tx, rx)),
                _ => eprintln!("skipped {bind}: cannot bind (no IPv6 here?)"),
            }
        }
        assert!(!out.is_empty(), "no loopback UDP at all");
        out
    }

    /// Real sockets on loopback, IPv4 and IPv6: every datagram arrives, in order, intact.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        for (tx, rx) in pairs().await {
            let to = rx.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 1 + i as usize]).collect();
            let items: Vec<(SocketAddr, &[u8])> =
                payloads.iter().map(|p| (to, p.as_slice())).collect();
            let mut sent = 0;
            while sent < items.len() {
                tx.writable().await.unwrap();
                sent += try_send_batch(&tx, &items[sent..]).unwrap_or(0);
            }
            let mut buf = [0u8; 512];
            for p in &payloads {
                let (n, from) = rx.recv_from(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], p.as_slice());
                assert_eq!(from, tx.local_addr().unwrap());
            }
        }
    }

    /// A burst larger than the slots is received in order over several calls; a datagram
    /// larger than a slot shows as longer than the limit (one byte more), so it is dropped.
    #[tokio::test]
    async fn a_burst_is_received_in_order_and_oversize_shows() {
        for (tx, rx) in pairs().await {
            let to = rx.local_addr().unwrap();
            let max = 100;
            let mut sent: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 1 + i as usize]).collect();
            sent.push(vec![0xAB; 300]);
            for p in &sent {
                tx.send_to(p, to).await.unwrap();
            }
            let mut b = RecvBatch::new(max + 1);
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < sent.len() {
                rx.readable().await.unwrap();
                let n = match b.try_recv(&rx) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("{e}"),
                };
                assert!(n <= 32);
                for i in 0..n {
                    let (from, d) = b.get(i).unwrap();
                    assert_eq!(from, tx.local_addr().unwrap());
                    got.push(d.to_vec());
                }
            }
            assert_eq!(&got[..70], &sent[..70]);
            assert_eq!(got[70].len(), max + 1, "oversize datagram cut at the slot");
        }
    }
}
