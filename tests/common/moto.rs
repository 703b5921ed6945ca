//! A real S3 API server for tests and benchmarks: `moto_server` (PyPI
//! `moto[server]`, installed by `.ci/run`) on a free port of 127.0.0.1.
//!
//! Without `moto_server` on PATH (or `RELSPEC_MOTO_SERVER`) callers say so
//! and skip, unless `RELSPEC_REQUIRE_MOTO=1` (set by `.ci/run`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every server starts with.
pub const BUCKET: &str = "relspec-cache";

/// An `Authorization` header naming credentials (anonymous reads are refused).
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0";

/// A running moto S3 server, stopped on drop.
pub struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    /// Start one on a free port with [`BUCKET`] created; `None` (the caller
    /// skips) when `moto_server` is not installed.
    pub fn start() -> Option<Moto> {
        let bin = moto_bin()?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let m = Moto { child: Some(child), port };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, _) = m.http("PUT", &format!("/{BUCKET}"), b"");
        assert_eq!(status, 200, "create bucket");
        Some(m)
    }

    /// Its `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One plain HTTP request (moto checks that a request names credentials,
    /// not its signature): status, body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n{AUTH}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let end = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
        let head = String::from_utf8_lossy(&resp[..end]).to_string();
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, resp[end + 4..].to_vec())
    }

    /// Every key in the bucket under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{BUCKET}?list-type=2&prefix={prefix}&max-keys=1000"), b"");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{body}");
        body.split("<Key>").skip(1).map(|k| k.split("</Key>").next().unwrap().to_string()).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn moto_bin() -> Option<PathBuf> {
    let from_env = std::env::var_os("RELSPEC_MOTO_SERVER").map(PathBuf::from);
    let found = from_env.filter(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("moto_server")).find(|p| p.is_file()))
    });
    if found.is_none() {
        assert!(
            std::env::var("RELSPEC_REQUIRE_MOTO").as_deref() != Ok("1"),
            "RELSPEC_REQUIRE_MOTO=1 but no moto_server on PATH (or RELSPEC_MOTO_SERVER)"
        );
        eprintln!("SKIPPED: no moto_server on PATH; `pip install 'moto[server]'` to run the S3 tests");
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
