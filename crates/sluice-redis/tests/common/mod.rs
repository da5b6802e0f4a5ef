//! A throwaway `redis-server` on a free loopback port, for the integration tests.
//!
//! The tests need Debian's `redis-server` binary (`scripts/test` installs it). If it is missing
//! they fail with a message saying so; they never skip silently.

#![allow(dead_code)] // each test file uses a different part of this helper

use std::process::Stdio;
use std::time::Duration;

use sluice::{Ask, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a fresh server may take to answer PING.
const STARTUP: Duration = Duration::from_secs(5);

/// A running `redis-server` child process; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Self::try_start_on(port).await {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// Starts a server on `port` (e.g. again, after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> Self {
        match Self::try_start_on(port).await {
            Ok(server) => server,
            Err(e) => panic!("could not start redis-server on port {port}: {e}"),
        }
    }

    async fn try_start_on(port: u16) -> Result<Self, String> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; the sluice-redis tests need it \
                 (`apt-get install -y redis-server`; scripts/test installs it)"
            ),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        let mut server = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if ping(port).await {
                return Ok(server);
            }
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server exited with {status}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {port} within {STARTUP:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the server process.
    pub async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// A plain redis-rs connection, to look at keys directly.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

/// `redis://127.0.0.1:<port>`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Whether a server on `port` answers PING (bounded).
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// Limits with the given rpm/tpm and their default bursts.
pub fn limits(rpm: Option<f64>, tpm: Option<f64>) -> Limits {
    Limits {
        rpm,
        tpm,
        burst_requests: None,
        burst_tokens: None,
    }
}

/// One request with `tokens` tokens.
pub fn ask(tokens: f64) -> Ask {
    Ask {
        requests: 1.0,
        tokens,
    }
}

/// Asserts `actual` is within `tolerance` of `expected`.
#[track_caller]
pub fn assert_near(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "expected {expected} ± {tolerance}, got {actual}"
    );
}
