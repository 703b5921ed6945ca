//! The decide step: for one rule, given what is known of its upstream rules
//! and of the cache, whether to skip, wait, reuse or run it, and why.
//!
//! Architecture invariant: a pure function of its arguments (the cache is
//! read through [`CacheView`]); it executes, writes and publishes nothing, so
//! `status` and `build --check` take the same decisions as `build`.

use super::state::{LastBuilt, last_parts};
use super::{RuleReport, Status};
use crate::db::{Dep, KeyParts};
use crate::project::RuleJob;
use crate::store::{Record, Store};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What to do with one rule now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// An upstream rule failed or was skipped (named): skip this one.
    Skip(String),
    /// A dry run, and an upstream rule (named) is stale: so is this one.
    StaleUpstream(String),
    /// Some upstream output is not known yet.
    Wait,
    /// The output for this key is in the store.
    Reuse {
        /// Output key.
        key: String,
        /// The stored output.
        record: Record,
    },
    /// It must run (or, in a dry run, is stale).
    Run {
        /// Output key.
        key: String,
        /// The key's parts (upstream content hashes filled in).
        parts: KeyParts,
        /// Why it runs.
        reasons: Vec<String>,
    },
}

/// What `decide` needs to know of the cache.
pub trait CacheView {
    /// The output of `rule` under `key` if the last build resolved it to
    /// exactly this key and its object is intact (no record read).
    fn fast(&self, rule: &str, key: &str, signature: &str) -> Option<Record>;
    /// The stored output under `key` (reads the record, checks the object).
    fn lookup(&self, key: &str) -> Option<Record>;
    /// The key parts of the last build of `rule`, if it has a record.
    fn last_parts(&self, rule: &str) -> Option<KeyParts>;
    /// Whether some earlier build resolved `rule`.
    fn built_before(&self, rule: &str) -> bool;
}

/// The cache as the store and the last build's state show it.
pub(crate) struct StoreView<'a> {
    pub(crate) store: &'a Store,
    pub(crate) last: &'a LastBuilt,
    pub(crate) intact: &'a HashSet<String>,
}

impl CacheView for StoreView<'_> {
    fn fast(&self, rule: &str, key: &str, signature: &str) -> Option<Record> {
        self.last
            .rules
            .get(rule)
            .filter(|le| le.key == key && self.intact.contains(key))
            .map(|le| le.record(rule, signature))
    }
    fn lookup(&self, key: &str) -> Option<Record> {
        self.store.lookup(key)
    }
    fn last_parts(&self, rule: &str) -> Option<KeyParts> {
        last_parts(self.store, self.last, rule)
    }
    fn built_before(&self, rule: &str) -> bool {
        self.last.rules.contains_key(rule)
    }
}

/// Decide what to do with `job`, given the reports of rules decided so far,
/// the records of upstream outputs known so far, and the cache.
pub fn decide(
    job: &RuleJob,
    reports: &HashMap<String, RuleReport>,
    records: &HashMap<String, Record>,
    dry_run: bool,
    cache: &impl CacheView,
) -> Decision {
    let ups: Vec<&String> = job.deps.iter().filter_map(|d| if let Dep::Rule(u) = d { Some(u) } else { None }).collect();
    let status = |u: &str| reports.get(u).map(|r| r.status);
    if let Some(u) = ups.iter().find(|u| matches!(status(u), Some(Status::Failed | Status::Skipped))) {
        return Decision::Skip((*u).clone());
    }
    if dry_run && let Some(u) = ups.iter().find(|u| matches!(status(u), Some(Status::Stale))) {
        return Decision::StaleUpstream((*u).clone());
    }
    if !ups.iter().all(|u| records.contains_key(*u)) {
        return Decision::Wait;
    }
    let upstream: BTreeMap<&str, &str> =
        ups.iter().filter_map(|u| records.get(*u).map(|r| (u.as_str(), r.data_hash()))).collect();
    let key = job.parts.key_with(upstream.iter().map(|(k, v)| (*k, *v)));
    if let Some(record) = cache.fast(&job.name, &key, &job.parts.signature).or_else(|| cache.lookup(&key)) {
        return Decision::Reuse { key, record };
    }
    let mut parts = (*job.parts).clone();
    parts.upstream = upstream.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let reasons = reasons(&parts, cache.last_parts(&job.name), cache.built_before(&job.name));
    Decision::Run { key, parts, reasons }
}

/// Why a rule with key `parts` runs, compared with its last build's parts.
pub fn reasons(parts: &KeyParts, prev: Option<KeyParts>, built_before: bool) -> Vec<String> {
    let missing = || vec!["cached output missing".to_string()];
    match prev {
        Some(prev) if &prev == parts => missing(),
        Some(prev) => {
            let d = parts.diff(&prev);
            if d.is_empty() { missing() } else { d }
        }
        None if built_before => missing(),
        None => vec!["not built before".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::RuleSummary;
    use crate::workspace::{RuleBody, RuleDecl, RuleDef, RuleOrigin};
    use std::sync::Arc;

    /// An in-memory cache: keys with records, last parts per rule.
    #[derive(Default)]
    struct Mem {
        stored: HashMap<String, Record>,
        last: HashMap<String, KeyParts>,
    }
    impl CacheView for Mem {
        fn fast(&self, _: &str, _: &str, _: &str) -> Option<Record> {
            None
        }
        fn lookup(&self, key: &str) -> Option<Record> {
            self.stored.get(key).cloned()
        }
        fn last_parts(&self, rule: &str) -> Option<KeyParts> {
            self.last.get(rule).cloned()
        }
        fn built_before(&self, rule: &str) -> bool {
            self.last.contains_key(rule)
        }
    }

    fn record(key: &str, hash: &str) -> Record {
        Record {
            key: key.into(),
            content_hash: hash.into(),
            rule: String::new(),
            signature: String::new(),
            schema: vec![],
            rows: 1,
            bytes: 1,
            elapsed_ms: 0,
            parts: None,
            data_hash: String::new(),
            checks: None,
            footer: Default::default(),
        }
    }

    fn job(name: &str, sig: &str, deps: &[&str]) -> RuleJob {
        let def = RuleDef {
            body: RuleBody::Sql("SELECT 1".into()),
            produces: None,
            tags: vec![],
            description: None,
            partition_by: vec![],
            incremental: None,
        };
        RuleJob {
            name: name.into(),
            summary: Arc::new(RuleSummary { reads: vec![], params: vec![], signature: sig.into(), sites: vec![] }),
            deps: deps.iter().map(|d| Dep::Rule(d.to_string())).collect(),
            parts: Arc::new(KeyParts { signature: sig.into(), engine: "e".into(), ..Default::default() }),
            decl: Arc::new(RuleDecl { name: name.into(), def, origin: RuleOrigin::default() }),
        }
    }

    fn report(rule: &str, status: Status) -> RuleReport {
        RuleReport { status, ..super::super::skipped(rule, String::new()) }
    }

    #[test]
    fn waits_then_runs_then_reuses() {
        let j = job("b", "sig-b", &["a"]);
        let mut cache = Mem::default();
        let mut reports = HashMap::new();
        let mut records = HashMap::new();
        assert_eq!(decide(&j, &reports, &records, false, &cache), Decision::Wait);
        reports.insert("a".to_string(), report("a", Status::Built));
        records.insert("a".to_string(), record("ka", "ha"));
        let Decision::Run { key, parts, reasons } = decide(&j, &reports, &records, false, &cache) else {
            panic!("runs")
        };
        assert_eq!(reasons, vec!["not built before"]);
        assert_eq!(parts.upstream.get("a").map(String::as_str), Some("ha"));
        assert_eq!(key, parts.key());
        // Stored under that key: reused.
        cache.stored.insert(key.clone(), record(&key, "hb"));
        assert!(matches!(decide(&j, &reports, &records, false, &cache), Decision::Reuse { .. }));
        // The upstream output changed: a new key, and the reason says which.
        records.insert("a".to_string(), record("ka2", "ha2"));
        cache.last.insert("b".to_string(), parts);
        let Decision::Run { reasons, .. } = decide(&j, &reports, &records, false, &cache) else { panic!("runs") };
        assert_eq!(reasons, vec!["upstream rule `a` changed"]);
    }

    #[test]
    fn skips_below_failures_and_stale_upstream_in_dry_runs() {
        let j = job("b", "sig-b", &["a"]);
        let cache = Mem::default();
        let mut reports = HashMap::new();
        let records = HashMap::new();
        reports.insert("a".to_string(), report("a", Status::Failed));
        assert_eq!(decide(&j, &reports, &records, false, &cache), Decision::Skip("a".into()));
        reports.insert("a".to_string(), report("a", Status::Stale));
        assert_eq!(decide(&j, &reports, &records, true, &cache), Decision::StaleUpstream("a".into()));
        assert_eq!(decide(&j, &reports, &records, false, &cache), Decision::Wait);
    }
}
