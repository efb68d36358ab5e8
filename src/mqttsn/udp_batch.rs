//! Sends a run of datagrams from one UDP socket with one `sendmmsg` system call (Linux, glibc):
//! under load the gateway answers many nodes per wake-up (PUBACKs, REGACKs), and a system call
//! per answer is a fixed cost a Pi feels. Elsewhere, and for what one call does not take, it
//! falls back to one send per datagram.

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sockets on loopback, IPv4 and IPv6: every datagram arrives, in order, intact.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(rx) = UdpSocket::bind(bind).await else {
                eprintln!("skipped {bind}: cannot bind (no IPv6 here?)");
                continue;
            };
            let tx = UdpSocket::bind(bind).await.unwrap();
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
}
