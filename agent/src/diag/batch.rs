//! Batched sends for the raw-socket probe loops (sweep, SYN scan): many datagrams per system call with
//! `sendmmsg(2)`, so a sweep of a /16 or a scan of 65,535 ports pays one syscall per batch instead of one
//! per probe. The kernel's work per packet (routing, the device, the peer's stack) stays; only the syscall
//! entry and exit and the socket lookup are shared.
//!
//! A full device queue (`ENOBUFS`, `EAGAIN`) is waited out briefly and the rest of the batch resent; a
//! refusal by a local firewall (`EPERM`) skips that one probe, which then simply gets no answer.
//!
//! [`RecvBatch`] is the receiving side: `recvmmsg(2)` takes every datagram already queued (up to
//! [`MAX_BATCH`]) in one call, so a reader that lets answers gather between calls pays one wake-up and one
//! syscall per batch instead of per answer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, SystemTime};

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

/// Largest datagram a [`RecvBatch`] slot keeps (longer ones are truncated; probe answers are far shorter).
pub const SLOT: usize = 1600;

/// Room for one `SCM_TIMESTAMPNS` control message, in 8-byte words (`cmsghdr` alignment).
const CTRL_WORDS: usize = 8;

/// Buffers for receiving up to [`MAX_BATCH`] datagrams per call, with the kernel's receive time of each
/// when the socket has `SO_TIMESTAMPNS` on ([`RecvBatch::enable_timestamps`]).
pub struct RecvBatch {
    bufs: Box<[[u8; SLOT]; MAX_BATCH]>,
    ctrl: Box<[[u64; CTRL_WORDS]; MAX_BATCH]>,
    lens: [usize; MAX_BATCH],
    stamps: [Option<SystemTime>; MAX_BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: Box::new([[0u8; SLOT]; MAX_BATCH]),
            ctrl: Box::new([[0u64; CTRL_WORDS]; MAX_BATCH]),
            lens: [0; MAX_BATCH],
            stamps: [None; MAX_BATCH],
            n: 0,
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("n", &self.n).finish()
    }
}

impl RecvBatch {
    /// Asks the kernel to stamp each datagram received on `fd` with its arrival time (`SO_TIMESTAMPNS`), so a
    /// reader that lets answers gather still knows when each one came.
    #[allow(unsafe_code)]
    pub fn enable_timestamps(fd: BorrowedFd<'_>) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live `c_int` and its size is passed; `fd` is an open socket.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives what is queued on `fd`: blocks (up to the socket's read timeout) for the first datagram
    /// unless `nonblocking`, then takes the others already there without waiting. Returns how many.
    #[allow(unsafe_code)]
    pub fn recv(&mut self, fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<usize> {
        let mut iovs: [libc::iovec; MAX_BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_BATCH];
        // SAFETY: `mmsghdr` is plain old data; all zeroes is a valid value (no name, no iovecs, no control).
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (buf, ctrl)) in self.bufs.iter_mut().zip(self.ctrl.iter_mut()).enumerate() {
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = SLOT;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = ctrl.as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of_val(ctrl);
        }
        let flags = if nonblocking {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        self.n = 0;
        // SAFETY: every header points to one iovec of `iovs`, each covering one whole `SLOT`-byte buffer of
        // `self.bufs`, and to one control buffer of `self.ctrl` of the length given; all of them live and are
        // borrowed mutably for the whole call; `fd` is an open socket.
        let got = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                MAX_BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = got as usize;
        for ((h, len), stamp) in hdrs[..self.n]
            .iter()
            .zip(&mut self.lens)
            .zip(&mut self.stamps)
        {
            *len = (h.msg_len as usize).min(SLOT);
            *stamp = timestamp(&h.msg_hdr);
        }
        Ok(self.n)
    }

    /// The datagrams of the last [`RecvBatch::recv`], each with its kernel receive time if stamped.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SystemTime>)> {
        self.bufs[..self.n]
            .iter()
            .zip(&self.lens[..self.n])
            .zip(&self.stamps[..self.n])
            .map(|((b, &l), &t)| (&b[..l], t))
    }
}

/// The `SCM_TIMESTAMPNS` of a received message, if it carries one.
#[allow(unsafe_code)]
fn timestamp(h: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: `h` was filled by `recvmmsg`: its control pointer and the length the kernel wrote describe our
    // control buffer, which the CMSG macros walk within those bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let (secs, nanos) = (
                    u64::try_from(ts.tv_sec).ok()?,
                    u32::try_from(ts.tv_nsec).ok()?,
                );
                return SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
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

    #[test]
    fn a_batch_receive_takes_every_queued_datagram_in_order() -> io::Result<()> {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        rx.set_read_timeout(Some(Duration::from_secs(2)))?;
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        tx.connect(rx.local_addr()?)?;
        RecvBatch::enable_timestamps(rx.as_fd())?;
        let mut batch = RecvBatch::default();
        let before = SystemTime::now();
        // Nothing queued: a non-blocking receive says so instead of waiting.
        let empty = batch.recv(rx.as_fd(), true).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        let bodies: Vec<Vec<u8>> = (0..100u16).map(|i| i.to_be_bytes().to_vec()).collect();
        let packets: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        send_all(tx.as_fd(), &packets, None)?;
        // A datagram longer than a slot is cut to the slot.
        tx.send(&[7u8; SLOT + 100])?;
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while seen.len() < 101 {
            let n = batch.recv(rx.as_fd(), false)?;
            assert!((1..=MAX_BATCH).contains(&n), "{n}");
            for (data, at) in batch.iter() {
                // Each datagram carries the kernel's receive time.
                let at =
                    at.unwrap_or_else(|| panic!("datagram {} without a timestamp", seen.len()));
                assert!(at >= before && at <= SystemTime::now(), "{at:?}");
                seen.push(data.to_vec());
            }
        }
        assert_eq!(seen[..100], bodies[..]);
        assert_eq!(seen[100], vec![7u8; SLOT]);
        Ok(())
    }
}
