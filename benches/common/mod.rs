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
