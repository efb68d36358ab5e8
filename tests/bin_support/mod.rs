//! Running the `edgebus` binary from integration tests.
//!
//! The ARM cross check (`cross-check.sh`) runs each test executable under qemu-user. The test
//! itself is emulated, but the `edgebus` binary it would start is an ARM executable that the
//! host kernel cannot load (no binfmt handler is registered there), so `exec` fails with
//! ENOEXEC. Tests that start the binary skip there, saying why; everywhere else they run.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Child, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_edgebus");

/// Whether the binary can be executed here; prints the reason when not. Call it first in
/// every test that starts the binary: `if !bin_support::runnable("test_name") { return; }`
pub fn runnable(test: &str) -> bool {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    let why = PROBE.get_or_init(|| {
        match std::process::Command::new(BIN).arg("--version").output() {
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => Some(format!(
                "cannot execute {BIN} ({e}): tests run emulated (qemu-user) and this kernel \
                 has no binfmt handler for the target's executables"
            )),
            // Under qemu-user, glibc's posix_spawn cannot hand the exec error back to the
            // parent and its child exits 127 instead, before printing anything.
            Ok(out) if out.status.code() == Some(127) && out.stdout.is_empty() => Some(format!(
                "cannot execute {BIN} (`--version` exits 127 without output): tests run \
                 emulated (qemu-user) and this kernel has no binfmt handler for the target's \
                 executables"
            )),
            // Any other outcome, including a failure, is for the test itself to report.
            _ => None,
        }
    });
    match why {
        None => true,
        Some(why) => {
            // Straight to stderr, not through the test harness's capture, so the reason
            // shows in the log of a passing run.
            let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
            false
        }
    }
}

/// Sends `sig` to a child we started.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on a child we own and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits for the child to exit; kills it and fails the test after `max`.
pub fn wait_exit(child: &mut Child, max: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if t0.elapsed() > max {
            let _ = child.kill();
            panic!("edgebus did not exit within {max:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
