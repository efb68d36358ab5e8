//! Skips for what qemu-user cannot emulate, for the ARM cross check (`cross-check.sh` runs
//! every test executable under qemu-user).
//!
//! qemu-user does not implement the termios2 ioctls that the serialport crate uses to set a
//! port's speed, so opening any serial port fails there with ENOSYS ("Function not
//! implemented"). Tests on pseudo-terminals then skip, saying why. On real hardware, native or
//! ARM, the ioctls exist and these tests run.

#![allow(dead_code)]

use std::ffi::CStr;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Whether a serial port can be opened here; prints the reason when not. Call it first in
/// every test that opens a pseudo-terminal as a serial port.
pub fn serial_usable(test: &str) -> bool {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    let why = PROBE.get_or_init(probe);
    match why {
        None => true,
        Some(why) => {
            // Straight to stderr, not through the harness's capture: the reason shows in the
            // log of a passing run.
            let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
            false
        }
    }
}

/// Opens a pty as a serial port; `Some(reason)` only for the emulator's ENOSYS. Any other
/// outcome is for the test itself to report.
fn probe() -> Option<String> {
    let Ok((_master, slave, name)) = open_pty() else {
        return None;
    };
    let opened = tokio_serial::new(&name, 9600).open();
    drop(slave);
    match opened {
        Err(e) if e.description.contains("not implemented") => Some(format!(
            "cannot open a serial port here ({e}): tests run emulated (qemu-user), which \
             does not implement the termios2 ioctls that set a port's speed"
        )),
        _ => None,
    }
}

/// A new pseudo-terminal pair: master, slave and the slave's device name.
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd, String)> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors; null name/termios/winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just returned by openpty and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    // ttyname_r, not ttyname: tests run on parallel threads and ttyname's static buffer
    // would hand one test another's name.
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: the buffer and its length are ours; on success it holds a NUL-terminated name.
    let rc = unsafe { libc::ttyname_r(s, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ttyname_r succeeded, so buf is NUL-terminated.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok((master, slave, name))
}
