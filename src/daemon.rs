//! `relspec daemon`: one resident process that answers `build`, `status`
//! and `check` for the CLI, so a command pays neither DataFusion's start and exit nor
//! its page faults (see benches/README.md, "A fresh process at 10,000
//! rules").
//!
//! The daemon listens on `cache/daemon.sock` (mode 0600). A CLI `build`,
//! `status` or `check` connects, sends its arguments, working directory and identity,
//! and passes its own stdin, stdout and stderr (`SCM_RIGHTS`). The daemon
//! checks the identity (the same binary, the same `RELSPEC_*` variables),
//! puts the client's descriptors in place of its own, runs the command
//! exactly as the CLI would (the snapshot, else a full build) and answers
//! with the exit status. Requests are served one at a time.
//!
//! Architecture invariant: the daemon holds no state between requests that a
//! fresh process would not read from disk: every answer is the one a fresh
//! process would give (the same code on the same files); a client that
//! cannot connect, or is refused, runs the command itself.

use crate::cli::Cli;
use clap::Parser;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Set in the daemon: commands free what they would leave to the exit.
pub(crate) static RESIDENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Free `x` in the daemon; leave it to the exit in a CLI process (freeing a
/// large project or report costs more than the command's own work).
pub(crate) fn done<T>(x: T) {
    if RESIDENT.load(std::sync::atomic::Ordering::Relaxed) {
        drop(x);
    } else {
        std::mem::forget(x);
    }
}

/// The socket of the workspace at `manifest`, if its manifest names a cache dir.
fn socket_path(manifest: &Path) -> Option<PathBuf> {
    Some(relspec_core::snapshot::cache_dir_of(manifest)?.join("daemon.sock"))
}

/// What a daemon must share with a client to answer for it: the binary
/// (its stamp), the `RELSPEC_*` variables (but the log filter) and the
/// object stores' `AWS_*`, `GOOGLE_*`, `AZURE_*` variables.
fn identity() -> String {
    let exe = std::env::current_exe().and_then(std::fs::metadata).ok();
    let exe = exe.map(|m| {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}:{}:{}", m.dev(), m.ino(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
    });
    // The object stores' variables too (credentials, endpoints: the remote
    // cache reads them), hashed rather than sent.
    let cloud = |k: &str| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p));
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| (k.starts_with("RELSPEC_") && k != "RELSPEC_LOG") || cloud(k))
        .map(|(k, v)| {
            if cloud(&k) {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v.hash(&mut h);
                (k, format!("{:016x}", h.finish()))
            } else {
                (k, v)
            }
        })
        .collect();
    vars.sort();
    serde_json::json!({ "exe": exe, "env": vars }).to_string()
}

/// Run this CLI invocation (`argv`, for the workspace at `manifest`) in a
/// running daemon; its exit status, or `None` when there is no daemon or it
/// refused (the caller runs the command itself). `RELSPEC_DAEMON=0` skips it.
pub(crate) fn forward(manifest: &Path) -> Option<i32> {
    if std::env::var("RELSPEC_DAEMON").is_ok_and(|v| v == "0") {
        return None;
    }
    let sock = socket_path(manifest)?;
    let stream = UnixStream::connect(&sock).ok()?;
    let cwd = std::env::current_dir().ok()?;
    let argv: Vec<String> = std::env::args().collect();
    let req = serde_json::json!({ "argv": argv, "cwd": cwd, "identity": identity() }).to_string() + "\n";
    send_with_fds(stream.as_raw_fd(), req.as_bytes(), &[0, 1, 2]).ok()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let answer: serde_json::Value = serde_json::from_str(&line).ok()?;
    answer["code"].as_i64().map(|c| c as i32)
}

/// Serve requests for the workspace at `manifest` until killed.
pub(crate) fn serve(manifest: &Path) -> Result<(), String> {
    let sock = socket_path(manifest).ok_or_else(|| format!("{}: cannot read the manifest", manifest.display()))?;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A socket nobody answers on is a leftover of a daemon that was killed.
    if sock.exists() {
        if UnixStream::connect(&sock).is_ok() {
            return Err(format!("a daemon already serves this workspace ({})", sock.display()));
        }
        let _ = std::fs::remove_file(&sock);
    }
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    RESIDENT.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("relspec daemon: serving {} (build, status, check)", sock.display());
    let own = identity();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let t = std::time::Instant::now();
        // Logged before answering: a client that saw the answer finds it in the log.
        match serve_one(&stream, &own) {
            Ok((what, code)) => {
                eprintln!("relspec daemon: served {what} (exit {code}) in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
                let _ = writeln!(&stream, "{}", serde_json::json!({ "code": code }));
            }
            Err(why) => {
                eprintln!("relspec daemon: refused a request: {why}");
                let _ = writeln!(&stream, "{}", serde_json::json!({ "refused": why }));
            }
        }
    }
    Ok(())
}

/// Serve one request: its command and exit status, or why it was refused.
fn serve_one(stream: &UnixStream, own: &str) -> Result<(String, i32), String> {
    let (bytes, fds) = recv_with_fds(stream.as_raw_fd()).map_err(|e| format!("reading the request: {e}"))?;
    let fds = Fds(fds);
    let req: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("not a request: {e}"))?;
    if req["identity"].as_str() != Some(own) {
        return Err("another binary or other RELSPEC_* variables".into());
    }
    let [stdin, stdout, stderr] = fds.0[..] else { return Err("expected three descriptors".into()) };
    let argv: Vec<String> = serde_json::from_value(req["argv"].clone()).map_err(|e| e.to_string())?;
    let cwd = PathBuf::from(req["cwd"].as_str().unwrap_or("."));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let what = format!("{:?}", argv.get(1).cloned().unwrap_or_default());
    let here = std::env::current_dir().map_err(|e| e.to_string())?;
    std::env::set_current_dir(&cwd).map_err(|e| format!("{}: {e}", cwd.display()))?;
    // The client's descriptors stand in for ours while the command runs.
    let saved = Swap::new(&[(stdin, 0), (stdout, 1), (stderr, 2)]).map_err(|e| e.to_string())?;
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::run_cli(cli))).unwrap_or(101);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    drop(saved);
    let _ = std::env::set_current_dir(here);
    Ok((what, code))
}

/// Descriptors received from a client, closed when dropped.
struct Fds(Vec<RawFd>);
impl Drop for Fds {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: these descriptors were received by this process and are owned here.
            unsafe { libc::close(fd) };
        }
    }
}

/// Our own descriptors, put back when dropped.
struct Swap(Vec<(RawFd, RawFd)>);
impl Swap {
    fn new(pairs: &[(RawFd, RawFd)]) -> std::io::Result<Swap> {
        let mut saved = Vec::new();
        for &(from, to) in pairs {
            // SAFETY: plain descriptor calls; `to` is one of 0, 1, 2, which this process has.
            let copy = unsafe { libc::dup(to) };
            if copy < 0 || unsafe { libc::dup2(from, to) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            saved.push((copy, to));
        }
        Ok(Swap(saved))
    }
}
impl Drop for Swap {
    fn drop(&mut self) {
        for &(copy, to) in &self.0 {
            // SAFETY: `copy` is our duplicate of `to`, made in `new`.
            unsafe {
                libc::dup2(copy, to);
                libc::close(copy);
            }
        }
    }
}

const MAX_FDS: usize = 3;

/// A message header over one buffer (`iov`) and a control buffer, both
/// borrowed for as long as the header is used.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    msg
}

/// Send `bytes` and the descriptors `fds` over a Unix socket.
fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let msg = message(&mut iov, &mut control);
    // SAFETY: the control buffer holds one header of CMSG_SPACE(fd_bytes) bytes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), fd_bytes);
    }
    // SAFETY: `msg` is fully initialized above.
    let n = unsafe { libc::sendmsg(sock, &msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (n as usize) < bytes.len() {
        // The rest of a long request, without descriptors.
        let mut s = std::mem::ManuallyDrop::new(unsafe_stream(sock));
        s.write_all(&bytes[n as usize..])?;
    }
    Ok(())
}

/// A `UnixStream` view of a descriptor we do not own (never dropped).
fn unsafe_stream(fd: RawFd) -> UnixStream {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller keeps it in ManuallyDrop, so the descriptor is not closed.
    unsafe { UnixStream::from_raw_fd(fd) }
}

/// Receive one request line and the descriptors sent with it.
fn recv_with_fds(sock: RawFd) -> std::io::Result<(Vec<u8>, Vec<RawFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut msg = message(&mut iov, &mut control);
    // SAFETY: `msg` points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    buf.truncate(n as usize);
    // The rest of a long request, up to its newline.
    if !buf.ends_with(b"\n") {
        let s = std::mem::ManuallyDrop::new(unsafe_stream(sock));
        let mut r = BufReader::new(&*s);
        let mut rest = Vec::new();
        r.read_until(b'\n', &mut rest)?;
        buf.extend(rest);
    }
    Ok((buf, fds))
}
