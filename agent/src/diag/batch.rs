//! Batched sends for the raw-socket probe loops (sweep, SYN scan): many datagrams per system call with
//! `sendmmsg(2)`, so a sweep of a /16 or a scan of 65,535 ports pays one syscall per batch instead of one
//! per probe. The kernel's work per packet (routing, the device, the peer's stack) stays; only the syscall
//! entry and exit and the socket lookup are shared.
//!
//! A full device queue (`ENOBUFS`, `EAGAIN`) is waited out briefly and the rest of the batch resent; a
//! refusal by a local firewall (`EPERM`) skips that one probe, which then simply gets no answer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use socket2::SockAddr;

/// Most datagrams handed to the kernel in one call.
pub const MAX_BATCH: usize = 64;

/// Sends every packet of `packets` (to `addrs[i]` each, or on a connected socket when `addrs` is `None`).
/// Returns how many were skipped because a local firewall refused them.
pub fn send_all(
    fd: BorrowedFd<'_>,
    packets: &[&[u8]],
    addrs: Option<&[SockAddr]>,
) -> io::Result<usize> {
    let mut skipped = 0;
    let mut done = 0;
    let mut full_waits = 0;
    while done < packets.len() {
        let end = (done + MAX_BATCH).min(packets.len());
        match sendmmsg(fd, &packets[done..end], addrs.map(|a| &a[done..end])) {
            Ok(n) => {
                done += n.max(1);
                full_waits = 0;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {
                full_waits += 1;
                if full_waits > 1000 {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // The first datagram of the batch failed; the kernel reports it only when nothing was sent.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                skipped += 1;
                done += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(skipped)
}

/// One `sendmmsg(2)` call: how many datagrams the kernel took (at least one), or the error of the first.
#[allow(unsafe_code)]
fn sendmmsg(
    fd: BorrowedFd<'_>,
    packets: &[&[u8]],
    addrs: Option<&[SockAddr]>,
) -> io::Result<usize> {
    debug_assert!(packets.len() <= MAX_BATCH);
    debug_assert!(addrs.is_none_or(|a| a.len() == packets.len()));
    let mut iovs: [libc::iovec; MAX_BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH];
    // SAFETY: `mmsghdr` is plain old data; all zeroes is a valid value (no name, no iovecs, no control).
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let n = packets.len().min(MAX_BATCH);
    for i in 0..n {
        // The kernel only reads through these pointers (`sendmmsg` never writes the data).
        iovs[i].iov_base = packets[i].as_ptr().cast_mut().cast();
        iovs[i].iov_len = packets[i].len();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        if let Some(a) = addrs.and_then(|a| a.get(i)) {
            h.msg_name = a.as_ptr().cast_mut().cast();
            h.msg_namelen = a.len();
        }
    }
    // SAFETY: `hdrs[..n]` point to `iovs` and to `packets` and `addrs`, all borrowed and alive for the whole
    // call; lengths are theirs; `fd` is an open socket borrowed for the call.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn every_datagram_arrives_in_order_over_several_batches() -> io::Result<()> {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        rx.set_read_timeout(Some(Duration::from_secs(2)))?;
        let to = SockAddr::from(rx.local_addr()?);
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        let bodies: Vec<Vec<u8>> = (0..150u16).map(|i| i.to_be_bytes().to_vec()).collect();
        let packets: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let addrs = vec![to; packets.len()];
        assert_eq!(send_all(tx.as_fd(), &packets, Some(&addrs))?, 0);
        let mut buf = [0u8; 8];
        for i in 0..150u16 {
            let n = rx.recv(&mut buf)?;
            assert_eq!(&buf[..n], &i.to_be_bytes());
        }
        // A connected socket takes no addresses.
        tx.connect(rx.local_addr()?)?;
        assert_eq!(send_all(tx.as_fd(), &packets[..3], None)?, 0);
        assert_eq!(rx.recv(&mut buf)?, 2);
        Ok(())
    }
}
