//! Shared by the serial integration tests: real pseudo-terminal pairs (openpty) standing in
//! for USB serial adapters, and a harness that runs a serial source built from YAML. Test
//! files using it also declare `mod emulation;` (where the pty is opened).
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgebus::config::Config;
use edgebus::reading::Reading;
use edgebus::sources::serial::engine::SerialStats;
use edgebus::sources::serial::{SerialSource, build_source};
use edgebus::sources::{Source, SourceContext, SourceEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A pseudo-terminal pair. The source opens the slave through `link` (a symlink, like
/// `/dev/serial/by-id/…`); the test plays the sensor on the master side. Dropping it is
/// an unplug: the master closes (the reader gets EIO) and the link disappears.
pub struct Pty {
    master: File,
    _slave: OwnedFd,
    pub link: PathBuf,
}

impl Pty {
    pub fn new(link: &Path) -> Pty {
        let (master, slave, name) =
            crate::emulation::open_pty().unwrap_or_else(|e| panic!("openpty: {e}"));
        let s = slave.as_raw_fd();
        // Raw from the start, so bytes written before the source opens the port are not
        // echoed or translated (\r → \n) by the line discipline.
        // SAFETY: plain termios calls on a valid descriptor.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(s, &mut t), 0);
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
        }
        let master = File::from(master);
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).expect("symlink to the pty");
        Pty {
            master,
            _slave: slave,
            link: link.to_path_buf(),
        }
    }

    /// What the sensor sends.
    pub fn write(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to pty master");
    }

    /// A second handle on the master for a thread that answers requests.
    pub fn master_clone(&self) -> File {
        self.master.try_clone().expect("dup master")
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// A sensor that answers requests: reads lines from the master, calls `reply` for each,
/// writes what it returns. Stops when dropped.
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    pub fn spawn(
        mut master: File,
        mut reply: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut buf = [0u8; 256];
            while !flag.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: master.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                if n <= 0 {
                    continue;
                }
                let Ok(k) = master.read(&mut buf) else { return };
                for &b in &buf[..k] {
                    line.push(b);
                    if b == b'\n' {
                        if let Some(out) = reply(&line)
                            && master.write_all(&out).is_err()
                        {
                            return;
                        }
                        line.clear();
                    }
                }
            }
        });
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds the first serial bus of a device map and its devices.
pub fn source_from_yaml(yaml: &str) -> SerialSource {
    let cfg = match Config::from_text(Path::new("test.yaml"), yaml, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    };
    let bus = cfg
        .buses
        .iter()
        .find(|b| b.kind == "serial")
        .expect("a serial bus");
    let devices: Vec<_> = cfg
        .devices
        .iter()
        .filter(|d| d.common.bus.as_deref() == Some(bus.name.as_str()))
        .collect();
    match build_source(bus, &devices) {
        Ok((s, _)) => s,
        Err(e) => panic!("build: {e:?}"),
    }
}

/// A running source and the receiving end of its events.
pub struct Running {
    pub events: mpsc::Receiver<SourceEvent>,
    pub stats: Arc<SerialStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(source: SerialSource) -> Running {
        let stats = source.stats();
        let (tx, rx) = mpsc::channel(1024);
        let (_ctx_tx, crx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            events: tx,
            commands: crx,
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(Box::new(source).run(ctx));
        Running {
            events: rx,
            stats,
            shutdown,
            task,
        }
    }

    /// The next event, or panics after `secs`.
    pub async fn next(&mut self, secs: u64) -> SourceEvent {
        match tokio::time::timeout(Duration::from_secs(secs), self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("source ended"),
            Err(_) => panic!("no event within {secs}s; stats: {:?}", self.stats),
        }
    }

    /// Readings until `n` arrived (availability events are returned separately).
    pub async fn readings(&mut self, n: usize, secs: u64) -> (Vec<Reading>, Vec<(String, bool)>) {
        let (mut r, mut a) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while r.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(SourceEvent::Reading(x))) => r.push(x),
                Ok(Some(SourceEvent::Availability { device, online })) => {
                    a.push((device.to_string(), online))
                }
                Ok(Some(other)) => panic!("unexpected event {other:?}"),
                Ok(None) => panic!("source ended"),
                Err(_) => panic!(
                    "only {} of {n} readings within {secs}s: {r:?}; stats: {:?}",
                    r.len(),
                    self.stats
                ),
            }
        }
        (r, a)
    }

    /// Waits for an availability change of `device`, skipping readings.
    pub async fn availability(&mut self, device: &str, secs: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(SourceEvent::Availability { device: d, online })) if &*d == device => {
                    return online;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("source ended"),
                Err(_) => panic!(
                    "no availability change of {device} within {secs}s; stats: {:?}",
                    self.stats
                ),
            }
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("source stops on shutdown")
            .expect("source task did not panic");
    }
}

/// `(point, value)` pairs of readings, for value-by-value comparison.
pub fn values(r: &[Reading]) -> Vec<(String, edgebus::reading::Value)> {
    r.iter()
        .map(|x| (x.point.to_string(), x.value.clone()))
        .collect()
}

/// A device map with one serial bus on `port`.
pub fn yaml(port: &Path, bus_extra: &str, devices: &str) -> String {
    format!(
        "gateway: {{ id: test }}\nbuses:\n  - name: line\n    type: serial\n    port: {}\n    reopen_backoff: 50ms\n    reopen_backoff_max: 200ms\n{bus_extra}devices:\n{devices}",
        port.display()
    )
}

/// Whether an external test peer (a program from Debian/PyPI) is installed. Missing: skip
/// with a printed reason on a dev box, but fail under CI (`CI=true`), where `.ci/run`
/// installs every peer.
pub fn have_peer(program: &str, package: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{program} is required in CI (install the `{package}` package)");
        }
        eprintln!(
            "skipping: {program} not found (install the `{package}` package to run this test)"
        );
    }
    found
}

/// `socat` joining two pseudo-terminals, each reachable through a symlink: the source
/// opens `device`, the test plays the sensor through `sensor`. Dropping it terminates
/// socat, which removes both links — an unplug.
pub struct Socat {
    child: std::process::Child,
    pub device: PathBuf,
    pub sensor: PathBuf,
}

impl Socat {
    pub fn start(device: &Path, sensor: &Path) -> Socat {
        let _ = std::fs::remove_file(device);
        let _ = std::fs::remove_file(sensor);
        let child = std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", device.display()))
            .arg(format!("pty,raw,echo=0,link={}", sensor.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start socat");
        for _ in 0..200 {
            if device.exists() && sensor.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            device.exists() && sensor.exists(),
            "socat did not create its links"
        );
        Socat {
            child,
            device: device.to_path_buf(),
            sensor: sensor.to_path_buf(),
        }
    }

    /// Opens the sensor side for writing lines (and reading requests).
    pub fn sensor(&self) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.sensor)
            .expect("open sensor side")
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        // SIGTERM lets socat remove its links; then make sure it is gone.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.device);
        let _ = std::fs::remove_file(&self.sensor);
    }
}
