//! Test harness: start the real `kpitables` binary on a free port.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Make sure the demo data exists (the test command generates it first; this is a fallback).
pub fn ensure_demo_data() {
    let data = root().join("data/demo");
    if !kpitables::demo::is_complete(&data) {
        let status = Command::new(env!("CARGO_BIN_EXE_kpitables"))
            .args(["demo", "--out"])
            .arg(&data)
            .status()
            .expect("run kpitables demo");
        assert!(status.success(), "kpitables demo failed");
    }
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Ports this process hands out never repeat, so two servers of tests running in
    // parallel never get the same one (the OS may give a just-released ephemeral port
    // twice); each test binary has its own block, below the ephemeral range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = 20_000 + (std::process::id() % 400) as u16 * 50;
    for _ in 0..500 {
        let port = block + NEXT.fetch_add(1, Ordering::Relaxed) % 50;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Start `kpitables serve` with extra arguments, in the repository root.
pub fn start(extra: &[&str]) -> Server {
    start_in(&root(), extra)
}

/// Start `kpitables serve` in `dir` with extra arguments.
pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kpitables"))
        .current_dir(dir)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kpitables");
    let mut server = Server { child, port };
    // Readiness wait, not a timing assertion: the model is loaded and bound first.
    for _ in 0..1200 {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("kpitables exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = server.child.kill();
    panic!("kpitables did not start listening on {port}");
}

/// A connection string for the demo user.
pub fn conninfo(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=exec password=exec dbname=kpitables")
}
