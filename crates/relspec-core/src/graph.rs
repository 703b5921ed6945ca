//! The workspace as a graph: rule DAG and column lineage walked across rules
//! (`relspec lineage`), drawn as Graphviz DOT or Mermaid (`relspec graph`).
//!
//! Architecture invariant: pure functions of the rule DAG and the per-rule
//! lineage (`analysis`); nothing here plans or executes.

use crate::db::Dep;
use crate::lineage::{How, RuleLineage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One column in a lineage walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageNode {
    /// Table (dataset or rule).
    pub table: String,
    /// Column; `None` for "the rows of `table`" (a key use, downstream).
    pub column: Option<String>,
    /// `rule` or `dataset`.
    pub kind: &'static str,
    /// How the parent uses it (upstream) or it uses the parent (downstream).
    pub how: Option<How>,
    /// Further steps in the walk.
    pub children: Vec<LineageNode>,
}

/// Per-rule lineage of a whole workspace.
pub struct Lineages<'a> {
    /// Rule -> lineage.
    pub rules: &'a BTreeMap<String, RuleLineage>,
}

impl Lineages<'_> {
    /// A node without children.
    fn node(&self, table: &str, column: Option<&str>, how: Option<How>) -> LineageNode {
        let kind = if self.rules.contains_key(table) { "rule" } else { "dataset" };
        LineageNode { table: table.into(), column: column.map(Into::into), kind, how, children: vec![] }
    }

    /// Where `table.column` comes from, transitively (`depth` 0 = unlimited).
    pub fn upstream(&self, table: &str, column: &str, how: Option<How>, depth: usize) -> LineageNode {
        let mut node = self.node(table, Some(column), how);
        if depth == 1 {
            return node;
        }
        if let Some(c) = self.rules.get(table).and_then(|l| l.column(column)) {
            node.children = c
                .sources
                .iter()
                .map(|s| self.upstream(&s.table, &s.column, Some(s.how), depth.saturating_sub(1)))
                .collect();
        }
        node
    }

    /// Everything that derives from `table.column`, transitively; rules that
    /// use it as a key appear as row nodes (`column: None`).
    pub fn downstream(&self, table: &str, column: &str, how: Option<How>) -> LineageNode {
        let mut seen = BTreeSet::new();
        self.downstream_inner(table, column, how, &mut seen)
    }

    fn downstream_inner(
        &self,
        table: &str,
        column: &str,
        how: Option<How>,
        seen: &mut BTreeSet<(String, String)>,
    ) -> LineageNode {
        let mut node = self.node(table, Some(column), how);
        if !seen.insert((table.to_string(), column.to_string())) {
            return node;
        }
        for (rule, l) in self.rules {
            for c in &l.columns {
                if let Some(s) = c.sources.iter().find(|s| s.table == table && s.column == column) {
                    node.children.push(self.downstream_inner(rule, &c.name, Some(s.how), seen));
                }
            }
            let key_uses: BTreeSet<How> =
                l.keys.iter().filter(|s| s.table == table && s.column == column).map(|s| s.how).collect();
            for h in key_uses {
                node.children.push(self.node(rule, None, Some(h)));
            }
        }
        node
    }
}

/// Render a lineage tree as indented text (`upstream`: the walk went up).
pub fn render_tree(node: &LineageNode, upstream: bool, out: &mut String) {
    fn go(n: &LineageNode, prefix: &str, last: bool, root: bool, upstream: bool, out: &mut String) {
        let name = match &n.column {
            Some(c) => format!("{}.{c}", n.table),
            None => format!("{} (rows)", n.table),
        };
        let how = n.how.map(|h| format!(" ({})", how_name(h))).unwrap_or_default();
        let kind = if n.kind == "dataset" { " [dataset]" } else { "" };
        if root {
            let note = if upstream && n.children.is_empty() && n.kind == "rule" && n.column.is_some() {
                "  (no upstream column: a constant or count(*))"
            } else {
                ""
            };
            let _ = writeln!(out, "{name}{kind}{note}");
        } else {
            let _ = writeln!(out, "{prefix}{}{name}{how}{kind}", if last { "└── " } else { "├── " });
        }
        let child_prefix =
            if root { String::new() } else { format!("{prefix}{}", if last { "    " } else { "│   " }) };
        for (i, c) in n.children.iter().enumerate() {
            go(c, &child_prefix, i + 1 == n.children.len(), false, upstream, out);
        }
    }
    go(node, "", true, true, upstream, out);
}

/// Lower-case name of a use.
pub fn how_name(h: How) -> &'static str {
    match h {
        How::Copied => "copied",
        How::Computed => "computed",
        How::Aggregated => "aggregated",
        How::Filter => "filter",
        How::Join => "join",
        How::Order => "order",
    }
}

/// Output format of `relspec graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// The rule DAG (and, with `columns`, column edges) as DOT or Mermaid.
/// `deps` is rule -> what it reads; datasets are the tables no rule defines.
pub fn render(
    format: Format,
    deps: &BTreeMap<String, Vec<Dep>>,
    columns: Option<&BTreeMap<String, RuleLineage>>,
) -> String {
    let mut datasets: BTreeSet<String> = BTreeSet::new();
    for ds in deps.values() {
        for d in ds {
            if let Dep::Dataset(n) = d {
                datasets.insert(n.clone());
            }
        }
    }
    // Columns shown per table: a rule's outputs; a dataset's columns that something reads.
    let mut table_cols: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(lin) = columns {
        for (rule, l) in lin {
            table_cols.insert(rule.clone(), l.columns.iter().map(|c| c.name.clone()).collect());
        }
        for l in lin.values() {
            for (t, c) in l.reads() {
                if !lin.contains_key(&t) {
                    let cols = table_cols.entry(t).or_default();
                    if !cols.contains(&c) {
                        cols.push(c);
                    }
                }
            }
        }
        for (t, cols) in table_cols.iter_mut() {
            if !lin.contains_key(t) {
                cols.sort();
            }
        }
    }
    let edges = edges(deps, columns);
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str("digraph relspec {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n");
            for (name, is_rule) in datasets.iter().map(|d| (d, false)).chain(deps.keys().map(|r| (r, true))) {
                let shape = if is_rule { "box" } else { "cylinder" };
                match table_cols.get(name) {
                    Some(cols) => {
                        let ports: Vec<String> =
                            cols.iter().enumerate().map(|(i, c)| format!("<c{i}> {}", dot_record_escape(c))).collect();
                        let _ = writeln!(
                            out,
                            "  {} [shape=record, label=\"{{{}|{}}}\"{}];",
                            dot_id(name),
                            dot_record_escape(name),
                            ports.join("|"),
                            if is_rule { "" } else { ", style=filled, fillcolor=\"#eeeeee\"" }
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  {} [shape={shape}];", dot_id(name));
                    }
                }
            }
            let port = |t: &str, c: &str| -> String {
                match table_cols.get(t).and_then(|cs| cs.iter().position(|x| x == c)) {
                    Some(i) => format!("{}:c{i}", dot_id(t)),
                    None => dot_id(t),
                }
            };
            for e in &edges {
                let _ = match *e {
                    Edge::Table { from, to } => writeln!(out, "  {} -> {};", dot_id(from), dot_id(to)),
                    Edge::Column { from, to, how } => {
                        writeln!(
                            out,
                            "  {} -> {} [label=\"{}\"];",
                            port(from.0, from.1),
                            port(to.0, to.1),
                            how_name(how)
                        )
                    }
                    Edge::Key { from, to, how } => writeln!(
                        out,
                        "  {} -> {} [style=dashed, label=\"{}\"];",
                        port(from.0, from.1),
                        dot_id(to),
                        how_name(how)
                    ),
                };
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("flowchart LR\n");
            for (name, is_rule) in datasets.iter().map(|d| (d, false)).chain(deps.keys().map(|r| (r, true))) {
                let id = mermaid_id(name);
                match table_cols.get(name) {
                    Some(cols) => {
                        let _ = writeln!(out, "  subgraph {id}[\"{}\"]", mermaid_text(name));
                        for c in cols {
                            let _ = writeln!(out, "    {id}__{}[\"{}\"]", mermaid_id(c), mermaid_text(c));
                        }
                        out.push_str("  end\n");
                    }
                    None if is_rule => {
                        let _ = writeln!(out, "  {id}[\"{}\"]", mermaid_text(name));
                    }
                    None => {
                        let _ = writeln!(out, "  {id}[(\"{}\")]", mermaid_text(name));
                    }
                }
            }
            let node = |t: &str, c: &str| format!("{}__{}", mermaid_id(t), mermaid_id(c));
            for e in &edges {
                let _ = match *e {
                    Edge::Table { from, to } => writeln!(out, "  {} --> {}", mermaid_id(from), mermaid_id(to)),
                    Edge::Column { from, to, how } => {
                        writeln!(out, "  {} -->|{}| {}", node(from.0, from.1), how_name(how), node(to.0, to.1))
                    }
                    Edge::Key { from, to, how } => {
                        writeln!(out, "  {} -.->|{}| {}", node(from.0, from.1), how_name(how), mermaid_id(to))
                    }
                };
            }
        }
    }
    out
}

/// One edge of the drawn graph, independent of the output format.
enum Edge<'a> {
    /// Table `from` is read by rule `to`.
    Table { from: &'a str, to: &'a str },
    /// Column `from` (table, column) derives column `to`.
    Column { from: (&'a str, &'a str), to: (&'a str, &'a str), how: How },
    /// Column `from` decides which rows rule `to` outputs.
    Key { from: (&'a str, &'a str), to: &'a str, how: How },
}

/// The table edges of the DAG, or (with lineage) the column and key edges.
fn edges<'a>(
    deps: &'a BTreeMap<String, Vec<Dep>>,
    columns: Option<&'a BTreeMap<String, RuleLineage>>,
) -> Vec<Edge<'a>> {
    let mut out = Vec::new();
    match columns {
        None => {
            for (rule, ds) in deps {
                for d in ds {
                    let (Dep::Dataset(u) | Dep::Rule(u)) = d;
                    out.push(Edge::Table { from: u, to: rule });
                }
            }
        }
        Some(lin) => {
            for (rule, l) in lin {
                for c in &l.columns {
                    for s in &c.sources {
                        out.push(Edge::Column { from: (&s.table, &s.column), to: (rule, &c.name), how: s.how });
                    }
                }
                for s in &l.keys {
                    out.push(Edge::Key { from: (&s.table, &s.column), to: rule, how: s.how });
                }
            }
        }
    }
    out
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot_record_escape(s: &str) -> String {
    let mut o = String::new();
    for ch in s.chars() {
        if matches!(ch, '{' | '}' | '|' | '<' | '>' | '"' | '\\' | ' ') {
            o.push('\\');
        }
        o.push(ch);
    }
    o
}

fn mermaid_id(s: &str) -> String {
    let mut o = String::from("n_");
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            o.push(ch);
        } else {
            let _ = write!(o, "_{:x}_", ch as u32);
        }
    }
    o
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}
