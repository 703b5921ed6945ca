//! The outcome of one rule in a build (reports and run bundles share it).

use serde::{Deserialize, Serialize};

/// What happened to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Executed and stored.
    Built,
    /// Found in the cache.
    Reused,
    /// Would be built (dry run).
    Stale,
    /// Failed; nothing published for it.
    Failed,
    /// Not run because an upstream rule failed.
    Skipped,
}
