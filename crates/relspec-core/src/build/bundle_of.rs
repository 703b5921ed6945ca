//! The run bundle of a build that executed something.

use super::{RuleReport, Status};
use crate::project::Project;
use std::collections::{BTreeMap, HashMap};

pub(crate) fn run_bundle(
    p: &Project,
    order: &[String],
    reports: &HashMap<String, RuleReport>,
    artifacts: &HashMap<String, String>,
    elapsed_ms: f64,
) -> crate::bundle::RunBundle {
    use crate::bundle::{RunBundle, RunDataset, RunRule};
    let spec = p.spec().ok();
    let fps = crate::db::dataset_fingerprints(&p.db, p.ws);
    let mut datasets = BTreeMap::new();
    if let Some(spec) = &spec {
        for (name, ds) in &spec.datasets {
            let (files, file_count) = match p.ws.datasets(&p.db).get(name) {
                Some(Ok(fs)) if fs.len() <= crate::bundle::RUN_FILES_MAX => {
                    (fs.iter().map(|f| (f.path(&p.db).clone(), f.hash(&p.db).clone())).collect(), fs.len())
                }
                Some(Ok(fs)) => (vec![], fs.len()),
                _ => (vec![], 0),
            };
            datasets.insert(
                name.clone(),
                RunDataset {
                    location: ds.path.clone(),
                    format: format!("{:?}", ds.format).to_lowercase(),
                    fingerprint: fps.get(name).and_then(|f| f.as_ref().ok()).cloned(),
                    files,
                    file_count,
                },
            );
        }
    }
    let rules = order
        .iter()
        .filter_map(|name| {
            let r = reports.get(name)?;
            // A reused output's artifact was written when it was built (`artifacts/<key>.json`).
            let artifact = artifacts.get(name).cloned();
            let ran = r.status != Status::Reused;
            let mut reasons = r.reasons.clone();
            reasons.extend(r.error.clone());
            Some((
                name.clone(),
                RunRule {
                    status: r.status,
                    key: r.key.clone(),
                    content_hash: r.content_hash.clone().filter(|_| ran),
                    rows: r.rows.filter(|_| ran),
                    elapsed_ms: r.elapsed_ms,
                    reasons,
                    artifact,
                    kernels: r.kernels.clone(),
                    remote: r.remote,
                },
            ))
        })
        .collect();
    RunBundle {
        run_id: crate::bundle::new_run_id(),
        engine_fingerprint: crate::db::engine_fingerprint(&p.db, p.ws).clone(),
        profile: spec.map(|s| crate::engine::profile_json(&s.profile)).unwrap_or_default(),
        datasets,
        rules,
        elapsed_ms,
    }
}
