//! A minimal Language Server client over a child process's stdio, for
//! driving `relspec lsp` from tests and benchmarks through its real protocol
//! (Content-Length framed JSON-RPC).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running server and the messages it sent that were not yet taken.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next_id: i64,
    /// Notifications received while waiting for something else.
    pub notifications: Vec<Value>,
}

impl Client {
    /// Start `cmd` (e.g. `relspec lsp`) in `dir` and initialize it with `dir`
    /// as the workspace folder.
    pub fn start(mut cmd: Command, dir: &Path) -> std::io::Result<Client> {
        let mut child = cmd.current_dir(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.parse::<usize>().ok();
                    }
                }
                let Some(len) = len else { return };
                let mut buf = vec![0; len];
                if r.read_exact(&mut buf).is_err() {
                    return;
                }
                if let Ok(v) = serde_json::from_slice(&buf)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let mut c = Client { child, stdin, rx, next_id: 0, notifications: Vec::new() };
        let root = uri(dir);
        c.request("initialize", json!({"processId": null, "rootUri": root, "capabilities": {}}))?;
        c.notify("initialized", json!({}))?;
        Ok(c)
    }

    fn send(&mut self, v: &Value) -> std::io::Result<()> {
        let body = serde_json::to_vec(v)?;
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len())?;
        self.stdin.write_all(&body)?;
        self.stdin.flush()
    }

    /// Send a notification.
    pub fn notify(&mut self, method: &str, params: Value) -> std::io::Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    /// Send a request and wait (up to 60 s) for its response; the `result`
    /// (or an `error` as `Err`).
    pub fn request(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.recv(deadline)?;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                if let Some(e) = m.get("error") {
                    return Err(std::io::Error::other(e.to_string()));
                }
                return Ok(m.get("result").cloned().unwrap_or(Value::Null));
            }
            self.notifications.push(m);
        }
    }

    fn recv(&mut self, deadline: Instant) -> std::io::Result<Value> {
        match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no message")),
            Err(RecvTimeoutError::Disconnected) => Err(std::io::Error::other("the server closed its output")),
        }
    }

    /// The next `publishDiagnostics` for `file_uri` (already received or
    /// arriving within `timeout`): its diagnostics.
    pub fn diagnostics_for(&mut self, file_uri: &str, timeout: Duration) -> std::io::Result<Vec<Value>> {
        let is_it = |m: &Value| {
            m.get("method") == Some(&json!("textDocument/publishDiagnostics")) && m["params"]["uri"] == json!(file_uri)
        };
        if let Some(i) = self.notifications.iter().position(is_it) {
            let m = self.notifications.remove(i);
            return Ok(m["params"]["diagnostics"].as_array().cloned().unwrap_or_default());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.recv(deadline)?;
            if is_it(&m) {
                return Ok(m["params"]["diagnostics"].as_array().cloned().unwrap_or_default());
            }
            self.notifications.push(m);
        }
    }

    /// `shutdown`, `exit`, and the server's exit status.
    pub fn shutdown(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.request("shutdown", Value::Null)?;
        self.notify("exit", Value::Null)?;
        self.child.wait()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `file://` URI of a path.
pub fn uri(path: &Path) -> String {
    lsp_types::Url::from_file_path(path).map(|u| u.to_string()).unwrap_or_default()
}

/// LSP position (line, UTF-16 column) of byte `offset` in `text`.
pub fn position(text: &str, offset: usize) -> Value {
    let (line, character) = crate::text::LineIndex::new(text).position(text, offset);
    json!({"line": line, "character": character})
}
