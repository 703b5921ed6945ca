//! What the site shows, gathered from a project: the DAG, every rule's
//! declaration, schema, lineage, contract and last build, every dataset's
//! registry entry. Plain data: `html` renders it, `data.js` carries the graph.

use relspec_core::analysis;
use relspec_core::bundle::{self, Artifact};
use relspec_core::db::Dep;
use relspec_core::error::Diag;
use relspec_core::lineage::RuleLineage;
use relspec_core::project::{self, DatasetInfo, Project};
use serde::Serialize;
use std::collections::BTreeMap;

/// One node of the drawn DAG (what `data.js` holds per node).
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Dataset or rule name.
    pub name: String,
    /// `dataset` or `rule`.
    pub kind: &'static str,
    /// Column and row in the layered drawing.
    pub col: usize,
    /// Row.
    pub row: usize,
    /// Columns (name, type).
    pub columns: Vec<(String, String)>,
    /// Page, relative to the site root.
    pub href: String,
    /// Last build status of a rule (`built`, `reused`, `failed`, ...).
    pub status: Option<String>,
    /// The rule has an error (not analyzed).
    pub error: bool,
    /// Tags of a rule.
    pub tags: Vec<String>,
}

/// The DAG as the page script draws it.
#[derive(Debug, Clone, Serialize)]
pub struct GraphData {
    /// Workspace name.
    pub workspace: String,
    /// Nodes, datasets first, then rules in dependency order.
    pub nodes: Vec<Node>,
    /// (from, to) node indices: `to` reads `from`.
    pub edges: Vec<(usize, usize)>,
}

/// Everything shown of one rule.
#[derive(Debug, Clone)]
pub struct RulePage {
    /// Name.
    pub name: String,
    /// `file:line` of the declaration.
    pub declared: String,
    /// The declaration's text (SQL or the TOML table).
    pub source: String,
    /// Description, tags.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Tables read.
    pub reads: Vec<String>,
    /// Rules that read this one.
    pub read_by: Vec<String>,
    /// Output schema and lineage, when analyzed.
    pub lineage: Option<RuleLineage>,
    /// Contract: name and (column, type) pairs, and the schema check's verdict.
    pub contract: Option<(String, Vec<(String, String)>)>,
    /// Errors of this rule.
    pub errors: Vec<String>,
    /// Latest run's entry: status, rows, elapsed ms, key, run id.
    pub last: Option<LastBuild>,
    /// The artifact of the output the latest run used (plans, checks).
    pub artifact: Option<Artifact>,
}

/// A rule in the latest run.
#[derive(Debug, Clone)]
pub struct LastBuild {
    /// Built, reused, failed, ...
    pub status: String,
    /// Output rows.
    pub rows: Option<u64>,
    /// Time in that run, ms.
    pub elapsed_ms: f64,
    /// Output key.
    pub key: Option<String>,
    /// Run id.
    pub run: String,
    /// Why it ran (or the error).
    pub reasons: Vec<String>,
}

/// The whole site's content.
#[derive(Debug, Clone)]
pub struct Site {
    /// The graph.
    pub graph: GraphData,
    /// Rule pages.
    pub rules: BTreeMap<String, RulePage>,
    /// Dataset pages.
    pub datasets: BTreeMap<String, DatasetInfo>,
    /// Where each dataset is declared (`file:line`).
    pub dataset_decl: BTreeMap<String, String>,
    /// Errors of the workspace (rendered), for the index.
    pub errors: Vec<String>,
    /// Latest run id, if any.
    pub run: Option<String>,
}

/// Page of a rule, relative to the site root.
pub fn rule_href(name: &str) -> String {
    format!("rules/{name}.html")
}

/// Page of a dataset, relative to the site root.
pub fn dataset_href(name: &str) -> String {
    format!("datasets/{name}.html")
}

fn diag_text(p: &Project, d: &Diag) -> String {
    let loc = relspec_core::db::location_string(&p.db, p.ws, d).map(|l| format!("{l}: ")).unwrap_or_default();
    let rule = d.rule.as_ref().map(|r| format!("rule `{r}`: ")).unwrap_or_default();
    let help = d.help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
    format!("{loc}{rule}{}{help}", d.kind)
}

/// Gather the site's content. Fails only when the manifest does not parse.
pub fn collect(p: &mut Project) -> Result<Site, Vec<Diag>> {
    p.refresh().map_err(|e| vec![e])?;
    let spec = p.spec().map_err(|e| vec![e])?;
    let set = analysis::analyze(p, &[]).map_err(|e| vec![e])?;
    let (infos, ds_errors) = project::dataset_infos_partial(p).map_err(|e| vec![e])?;
    let datasets: BTreeMap<String, DatasetInfo> = infos.into_iter().map(|i| (i.name.clone(), i)).collect();
    let mut errors: Vec<String> = set.errors.iter().map(|d| diag_text(p, d)).collect();
    errors.extend(ds_errors.iter().map(|d| diag_text(p, d)));
    let store = p.store().map_err(|e| vec![e])?.clone();
    let run = bundle::latest_run(&store);
    let graph = p.graph().clone();

    // Nodes: datasets (declared order), then rules in dependency order.
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut names: Vec<(String, &'static str)> = Vec::new();
    for name in spec.datasets.keys() {
        index.insert(name.clone(), names.len());
        names.push((name.clone(), "dataset"));
    }
    let mut order = graph.order.clone();
    if order.is_empty() {
        order = graph.deps.keys().cloned().collect(); // a cycle: draw anyway
    }
    for r in &order {
        index.insert(r.clone(), names.len());
        names.push((r.clone(), "rule"));
    }
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    let mut edges = Vec::new();
    for (r, deps) in &graph.deps {
        let Some(&to) = index.get(r) else { continue };
        for d in deps {
            if let Some(from) = index.get(d.name()).copied().filter(|f| *f < to) {
                preds[to].push(from);
                edges.push((from, to));
            }
        }
    }
    let pos = crate::layout::layers(&preds);

    let mut rules = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, (name, kind)) in names.iter().enumerate() {
        let (col, row) = pos[i];
        if *kind == "dataset" {
            let columns = datasets
                .get(name)
                .map(|d| d.schema.iter().map(|c| (c.name.clone(), c.data_type.clone())).collect())
                .unwrap_or_default();
            nodes.push(Node {
                name: name.clone(),
                kind,
                col,
                row,
                columns,
                href: dataset_href(name),
                status: None,
                error: !datasets.contains_key(name),
                tags: vec![],
            });
            continue;
        }
        let decl = p.decl(name).cloned();
        let lineage = set.rules.get(name).map(|a| a.lineage.clone());
        let last = run.as_ref().and_then(|run| {
            run.rules.get(name).map(|r| LastBuild {
                status: format!("{:?}", r.status).to_lowercase(),
                rows: r.rows,
                elapsed_ms: r.elapsed_ms,
                key: r.key.clone(),
                run: run.run_id.clone(),
                reasons: r.reasons.clone(),
            })
        });
        let artifact = run
            .as_ref()
            .and_then(|run| run.rules.get(name))
            .and_then(|r| r.artifact_path())
            .and_then(|a| bundle::read_artifact(&store, &a));
        let last = last.map(|mut l| {
            l.rows = l.rows.or(artifact.as_ref().map(|a| a.rows));
            l
        });
        let (declared, source) = match &decl {
            Some(d) => {
                let text = p.file_text(&d.origin.file).unwrap_or_default();
                let (s, l) = d.origin.extent(&text);
                let line = relspec_core::error::line_col(&text, s).0;
                (format!("{}:{line}", d.origin.file.display()), text[s..s + l].trim_end().to_string())
            }
            None => (String::new(), String::new()),
        };
        let produces = decl.as_ref().and_then(|d| d.def.produces.clone());
        let contract = produces.and_then(|c| {
            spec.contracts
                .get(&c)
                .map(|cs| (c.clone(), cs.columns.iter().map(|col| (col.name.clone(), col.data_type.clone())).collect()))
        });
        let reads: Vec<String> =
            graph.deps.get(name).map(|ds| ds.iter().map(|d| d.name().to_string()).collect()).unwrap_or_default();
        let read_by: Vec<String> = graph
            .deps
            .iter()
            .filter(|(_, ds)| ds.iter().any(|d| matches!(d, Dep::Rule(n) if n == name)))
            .map(|(r, _)| r.clone())
            .collect();
        let rule_errors: Vec<String> =
            set.errors.iter().filter(|d| d.rule.as_deref() == Some(name)).map(|d| diag_text(p, d)).collect();
        let tags = decl.as_ref().map(|d| d.def.tags.clone()).unwrap_or_default();
        nodes.push(Node {
            name: name.clone(),
            kind,
            col,
            row,
            columns: lineage
                .as_ref()
                .map(|l| l.columns.iter().map(|c| (c.name.clone(), c.data_type.clone())).collect())
                .unwrap_or_default(),
            href: rule_href(name),
            status: last.as_ref().map(|l| l.status.clone()),
            error: lineage.is_none(),
            tags: tags.clone(),
        });
        rules.insert(
            name.clone(),
            RulePage {
                name: name.clone(),
                declared,
                source,
                description: decl.as_ref().and_then(|d| d.def.description.clone()),
                tags,
                reads,
                read_by,
                lineage,
                contract,
                errors: rule_errors,
                last,
                artifact,
            },
        );
    }
    let dataset_decl = spec
        .datasets
        .iter()
        .map(|(n, d)| {
            let line = d
                .span
                .and_then(|(s, _)| p.file_text(&d.file).map(|t| relspec_core::error::line_col(&t, s).0))
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            (n.clone(), format!("{}{line}", d.file.display()))
        })
        .collect();
    Ok(Site {
        graph: GraphData { workspace: spec.name.clone(), nodes, edges },
        rules,
        datasets,
        dataset_decl,
        errors,
        run: run.map(|r| r.run_id),
    })
}
