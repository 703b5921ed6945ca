//! Helpers shared by the benchmarks.
#![allow(dead_code)]

/// Median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Workspace sizes from `RELSPEC_BENCH_SIZES` (comma-separated), else `default`.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("RELSPEC_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().parse().expect("RELSPEC_BENCH_SIZES: numbers")).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Run the real `relspec` binary in `root`; require success and return the
/// wall time in ms and its stdout parsed as JSON (`Null` if it is not JSON).
pub fn relspec(root: &std::path::Path, args: &[&str]) -> (f64, serde_json::Value) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"))
        .current_dir(root)
        .args(args)
        .output()
        .expect("run relspec");
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "relspec {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
}

/// A running `relspec watch --json` and its events (killed when dropped).
pub struct Watch {
    /// The process.
    pub child: std::process::Child,
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Watch {
    /// Start `relspec watch --json` in `root`.
    pub fn spawn(root: &std::path::Path) -> Watch {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relspec"))
            .current_dir(root)
            .args(["watch", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn relspec watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Watch { child, rx }
    }

    /// Events up to and including the first that `pred` accepts.
    pub fn until(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.rx.recv_timeout(std::time::Duration::from_secs(600)).expect("watch event");
            let stop = pred(&v);
            seen.push(v);
            if stop {
                return seen;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One generated Python module (benches `sources` and `partitions`): three
/// classes of five methods, helper
/// functions, imports of neighbouring modules, calls within and across them.
pub fn module(i: usize, n: usize, edit: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let (a, b) = ((i + 1) % n, (i + 7) % n);
    writeln!(s, "import os\nfrom pkg.m{a:05} import helper_{a}_0\nfrom pkg.m{b:05} import Class{b}_0 as Other\n")
        .unwrap();
    for c in 0..3 {
        writeln!(s, "class Class{i}_{c}:").unwrap();
        writeln!(s, "    def __init__(self, value):\n        self.value = value\n        self.items = []\n").unwrap();
        for m in 0..5 {
            writeln!(s, "    def method_{m}(self, x):").unwrap();
            writeln!(s, "        y = helper_{i}_{}(x) + {edit}", m % 3).unwrap();
            writeln!(s, "        self.items.append(y)").unwrap();
            writeln!(s, "        return os.path.join(str(y), str(len(self.items)))\n").unwrap();
        }
    }
    for h in 0..3 {
        writeln!(s, "def helper_{i}_{h}(x):\n    o = Other(x)\n    return helper_{a}_0(x) if x else o.method_1(x)\n")
            .unwrap();
    }
    s
}
