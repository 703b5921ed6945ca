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
