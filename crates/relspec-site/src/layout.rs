//! A layered drawing of the DAG: datasets in the first column, each rule one
//! column right of the furthest table it reads; within a column, nodes are
//! ordered by the mean row of what they read (a few barycenter sweeps) and
//! placed as near that row as the node above allows, so edges mostly run
//! straight.
//!
//! Architecture invariant: a pure function of the graph; the same graph
//! always gives the same coordinates.

use std::collections::BTreeMap;

/// Column width and row height, in SVG units.
pub const COL_W: f64 = 280.0;
/// Row height.
pub const ROW_H: f64 = 52.0;

/// Column and row of each node, given `preds[i]` (the nodes node `i` reads).
/// Nodes must be in dependency order (every predecessor before its reader).
pub fn layers(preds: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let n = preds.len();
    let mut col = vec![0usize; n];
    for i in 0..n {
        col[i] = preds[i].iter().map(|&p| col[p] + 1).max().unwrap_or(0);
    }
    let mut by_col: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in col.iter().enumerate() {
        by_col.entry(*c).or_default().push(i);
    }
    let mut row = vec![0f64; n];
    for nodes in by_col.values() {
        for (r, &i) in nodes.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    for _ in 0..4 {
        for nodes in by_col.values_mut() {
            let key = |i: usize| {
                if preds[i].is_empty() {
                    row[i]
                } else {
                    preds[i].iter().map(|&p| row[p]).sum::<f64>() / preds[i].len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = nodes.iter().map(|&i| (key(i), i)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *nodes = keyed.into_iter().map(|(_, i)| i).collect();
            for (r, &i) in nodes.iter().enumerate() {
                row[i] = r as f64;
            }
        }
    }
    // Final rows: each node as near the mean row of what it reads as the
    // node above it allows, so a rule sits beside its inputs.
    let mut fin = vec![0usize; n];
    for nodes in by_col.values() {
        let mut next = 0usize;
        for &i in nodes {
            let want = if preds[i].is_empty() {
                next
            } else {
                (preds[i].iter().map(|&p| fin[p] as f64).sum::<f64>() / preds[i].len() as f64).round() as usize
            };
            fin[i] = want.max(next);
            next = fin[i] + 1;
        }
    }
    (0..n).map(|i| (col[i], fin[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_sit_right_of_what_they_read() {
        // 0, 1 datasets; 2 reads 0; 3 reads 1 and 2.
        let l = layers(&[vec![], vec![], vec![0], vec![1, 2]]);
        assert_eq!(l[0].0, 0);
        assert_eq!(l[2].0, 1);
        assert_eq!(l[3].0, 2);
        assert_ne!(l[0], l[1]);
        assert_eq!(layers(&[vec![], vec![], vec![0], vec![1, 2]]), l, "deterministic");
    }
}
