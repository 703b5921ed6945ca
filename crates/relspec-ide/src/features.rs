//! IDE answers at a position: what a name is ([`Symbol`]), hover text,
//! definition, references, completion and quick fixes. Positions are byte
//! offsets in files relative to the workspace root; `server` converts.
//!
//! Names are resolved against the live project: dataset, rule and contract
//! declarations from the manifest and rule files, columns from the latest
//! analysis (rules) and the dataset registry (datasets), aliases from the
//! text of the rule around the cursor (`FROM t AS a`, `JOIN t a`).

use crate::host::Ide;
use crate::text::{self, Word, is_name_char};
use relspec_core::bundle;
use relspec_core::graph::{Lineages, how_name, render_tree};
use relspec_core::workspace::RuleDecl;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a name in a workspace file refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbol {
    /// A dataset (`[datasets.NAME]` or a source's table).
    Dataset(String),
    /// A rule.
    Rule(String),
    /// A contract.
    Contract(String),
    /// A parameter of `[params]`.
    Param(String),
    /// A column of a dataset or a rule's output.
    Column {
        /// Dataset or rule.
        table: String,
        /// Column name.
        column: String,
    },
}

/// A place in a workspace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// File relative to the root.
    pub file: PathBuf,
    /// Byte offset and length.
    pub span: (usize, usize),
}

/// Hover content.
#[derive(Debug, Clone)]
pub struct Hover {
    /// Markdown.
    pub markdown: String,
    /// The name hovered.
    pub span: (usize, usize),
}

/// What a completion item names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionKind {
    /// A dataset.
    Dataset,
    /// A rule.
    Rule,
    /// A column.
    Column,
    /// A parameter.
    Param,
}

/// One completion item.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Text to insert.
    pub label: String,
    /// What it is.
    pub kind: CompletionKind,
    /// Type or table.
    pub detail: String,
}

/// A quick fix: replace a span with a suggested name.
#[derive(Debug, Clone)]
pub struct Fix {
    /// Title shown in the editor.
    pub title: String,
    /// File relative to the root.
    pub file: PathBuf,
    /// Byte offset and length replaced.
    pub span: (usize, usize),
    /// New text.
    pub replacement: String,
}

impl Ide {
    /// Rule declared around `offset` in `file`.
    pub fn rule_at(&self, file: &Path, offset: usize) -> Option<Arc<RuleDecl>> {
        let text = self.text(file)?;
        let p = self.project_shared();
        p.graph()
            .deps
            .keys()
            .filter_map(|r| p.decl(r))
            .find(|d| {
                d.origin.file == file && {
                    let (s, l) = d.origin.extent(&text);
                    s <= offset && offset <= s + l
                }
            })
            .cloned()
    }

    /// A rule's byte range in its file's text (see `RuleOrigin::extent`).
    fn rule_extent(&self, rule: &RuleDecl) -> Option<(String, (usize, usize))> {
        let text = self.text(&rule.origin.file)?;
        let e = rule.origin.extent(&text);
        Some((text, e))
    }

    fn is_dataset(&self, name: &str) -> bool {
        self.spec().is_some_and(|s| s.datasets.contains_key(name))
    }

    fn is_rule(&self, name: &str) -> bool {
        self.project_shared().decl(name).is_some()
    }

    fn is_table(&self, name: &str) -> bool {
        self.is_dataset(name) || self.is_rule(name)
    }

    /// Tables named in the text of `rule`, and aliases given to them there.
    fn scope(&self, rule: &RuleDecl) -> (Vec<String>, Vec<(String, String)>) {
        let Some((text, (s, l))) = self.rule_extent(rule) else { return (vec![], vec![]) };
        let body = &text[s..s + l];
        let words = words(body);
        let mut tables = Vec::new();
        let mut aliases = Vec::new();
        for (i, (w, _, e)) in words.iter().enumerate() {
            if !self.is_table(w) || body[..words[i].1].ends_with('.') {
                continue;
            }
            if !tables.contains(&w.to_string()) {
                tables.push(w.to_string());
            }
            // `t AS a` or `t a` (only whitespace between).
            let mut j = i + 1;
            let mut end = *e;
            if let Some((n, ns, ne)) = words.get(j)
                && n.eq_ignore_ascii_case("as")
                && body[end..*ns].trim().is_empty()
            {
                end = *ne;
                j += 1;
            }
            if let Some((a, as_, _)) = words.get(j)
                && body[end..*as_].trim().is_empty()
                && !body[end..*as_].is_empty()
                && !is_keyword(a)
                && !self.is_table(a)
            {
                aliases.push((a.to_string(), w.to_string()));
            }
        }
        (tables, aliases)
    }

    /// The table a qualifier names inside `rule` (a table name or an alias).
    fn resolve_qualifier(&self, rule: Option<&RuleDecl>, q: &str) -> Option<String> {
        if self.is_table(q) {
            return Some(q.to_string());
        }
        let (_, aliases) = self.scope(rule?);
        aliases.into_iter().find(|(a, _)| a == q).map(|(_, t)| t)
    }

    /// What the name at `offset` in `file` refers to, and its span.
    pub fn symbol_at(&mut self, file: &Path, offset: usize) -> Option<(Symbol, (usize, usize))> {
        let text = self.text(file)?;
        let w: Word = text::word_at(&text, offset)?;
        let span = (w.start, w.end - w.start);
        let spec = self.spec()?;
        let name = w.text.to_string();
        if w.param {
            return spec.params.contains_key(&name).then_some((Symbol::Param(name), span));
        }
        let rule = self.rule_at(file, offset);
        if let Some(q) = w.qualifier {
            // `[rules.x]`, `[datasets.x]`, `[contracts.x]` headers name declarations.
            match q {
                "rules" if self.is_rule(&name) => return Some((Symbol::Rule(name), span)),
                "datasets" if self.is_dataset(&name) => return Some((Symbol::Dataset(name), span)),
                "contracts" if spec.contracts.contains_key(&name) => return Some((Symbol::Contract(name), span)),
                "params" if spec.params.contains_key(&name) => return Some((Symbol::Param(name), span)),
                _ => {}
            }
            let table = self.resolve_qualifier(rule.as_deref(), q)?;
            return Some((Symbol::Column { table, column: name }, span));
        }
        let line_start = text[..w.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_before = &text[line_start..w.start];
        let names_contract = line_before.contains("contract") || line_before.contains("produces");
        if names_contract && spec.contracts.contains_key(&name) {
            return Some((Symbol::Contract(name), span));
        }
        if self.is_rule(&name) {
            return Some((Symbol::Rule(name), span));
        }
        if self.is_dataset(&name) {
            return Some((Symbol::Dataset(name), span));
        }
        if let Some(rule) = rule {
            // An output column of this rule, else a column of a table it reads.
            if self.columns_of(&rule.name).is_some_and(|cs| cs.iter().any(|c| c.0 == name)) {
                return Some((Symbol::Column { table: rule.name.clone(), column: name }, span));
            }
            let (tables, _) = self.scope(&rule);
            for t in tables {
                if self.columns_of(&t).is_some_and(|cs| cs.iter().any(|c| c.0 == name)) {
                    return Some((Symbol::Column { table: t, column: name }, span));
                }
            }
        }
        None
    }

    /// Hover text for the name at `offset`.
    pub fn hover(&mut self, file: &Path, offset: usize) -> Option<Hover> {
        let (sym, span) = self.symbol_at(file, offset)?;
        let markdown = match &sym {
            Symbol::Dataset(n) => self.hover_dataset(n),
            Symbol::Rule(n) => self.hover_rule(n),
            Symbol::Contract(n) => {
                let spec = self.spec()?;
                let c = spec.contracts.get(n)?;
                let mut s = format!("**contract** `{n}`\n\n| column | type |\n|---|---|\n");
                for col in &c.columns {
                    let _ = writeln!(s, "| `{}` | `{}` |", col.name, col.data_type);
                }
                if !c.checks.is_empty() {
                    let _ = writeln!(s, "\n{} data check(s)", c.checks.len());
                }
                s
            }
            Symbol::Param(n) => {
                let spec = self.spec()?;
                format!("**param** `${n}` = `{}`", spec.params.get(n)?.sql_literal())
            }
            Symbol::Column { table, column } => self.hover_column(table, column),
        };
        Some(Hover { markdown, span })
    }

    fn hover_dataset(&mut self, name: &str) -> String {
        let mut s = format!("**dataset** `{name}`");
        let spec = self.spec();
        let ds = self.datasets();
        if let Some(d) = ds.get(name) {
            let _ = write!(s, " — {} at `{}`, {} file(s)", d.format, d.location, d.files.len());
            s.push_str("\n\n");
            table(&mut s, d.schema.iter().map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable)));
            let fp = d.fingerprint.get(..12).unwrap_or(&d.fingerprint);
            let _ = write!(s, "\nfingerprint `{fp}`");
        }
        if let Some(d) = spec.as_ref().and_then(|sp| sp.datasets.get(name)) {
            let _ = write!(s, "\n\ndeclared in `{}`{}", d.file.display(), self.line_of(&d.file, d.span));
        }
        s
    }

    fn hover_rule(&mut self, name: &str) -> String {
        let mut s = format!("**rule** `{name}`");
        let decl = self.project_shared().decl(name).cloned();
        if let Some(d) = decl.as_ref().and_then(|d| d.def.description.clone()) {
            let _ = write!(s, " — {d}");
        }
        s.push_str("\n\n");
        match self.rules.get(name).map(|a| a.lineage.columns.clone()) {
            Some(cols) => table(&mut s, cols.iter().map(|c| (c.name.as_str(), c.data_type.as_str(), c.nullable))),
            None => s.push_str("_not analyzed (it or a rule it reads has an error)_\n"),
        }
        let reads: Vec<String> = self
            .project_shared()
            .graph()
            .deps
            .get(name)
            .map(|ds| ds.iter().map(|d| format!("`{}`", d.name())).collect())
            .unwrap_or_default();
        if !reads.is_empty() {
            let _ = write!(s, "\nreads {}", reads.join(", "));
        }
        let _ = write!(s, "\n\nlast build: {}", self.last_build(name));
        if let Some(d) = &decl {
            let _ = write!(
                s,
                "\n\ndeclared in `{}`{}",
                d.origin.file.display(),
                self.line_of(&d.origin.file, d.origin.span)
            );
        }
        s
    }

    /// The latest run's status of `rule`: status, rows, key, time.
    pub fn last_build(&mut self, rule: &str) -> String {
        let Ok(store) = self.project().store().cloned() else { return "never".into() };
        let Some(run) = bundle::latest_run(&store) else { return "never built".into() };
        let Some(r) = run.rules.get(rule) else { return "not in the latest run".into() };
        let art = r.artifact_path().and_then(|a| bundle::read_artifact(&store, &a));
        let rows = r.rows.or(art.as_ref().map(|a| a.rows));
        let mut s = format!("{:?}", r.status).to_lowercase();
        if let Some(n) = rows {
            let _ = write!(s, ", {n} rows");
        }
        if r.elapsed_ms > 0.0 {
            let _ = write!(s, ", {:.1} ms", r.elapsed_ms);
        }
        if let Some(k) = &r.key {
            let _ = write!(s, ", key `{}`", k.get(..12).unwrap_or(k));
        }
        let _ = write!(s, " (run {})", run.run_id);
        let current = self.project_shared().job(rule).ok().map(|j| j.parts.signature.clone());
        if let (Some(a), Some(cur)) = (&art, current)
            && a.signature != cur
        {
            s.push_str("; the definition changed since");
        }
        s
    }

    fn hover_column(&mut self, table: &str, column: &str) -> String {
        let ty = self
            .columns_of(table)
            .and_then(|cs| cs.into_iter().find(|c| c.0 == column))
            .map(|c| format!(": `{}`{}", c.1, if c.2 { "" } else { " NOT NULL" }))
            .unwrap_or_default();
        let lin = self.lineages();
        let l = Lineages { rules: &lin };
        let mut s = format!("**column** `{table}.{column}`{ty}\n\n");
        let mut tree = String::new();
        if self.is_rule(table) {
            let hows: BTreeSet<&str> = self
                .rules
                .get(table)
                .and_then(|a| a.lineage.column(column))
                .map(|c| c.sources.iter().map(|s| how_name(s.how)).collect())
                .unwrap_or_default();
            let hows: Vec<&str> = hows.into_iter().collect();
            let how = if hows.is_empty() { String::new() } else { format!(" ({})", hows.join(", ")) };
            let _ = writeln!(s, "where it comes from{how}:");
            render_tree(&l.upstream(table, column, None, 0), true, &mut tree);
        } else {
            s.push_str("dataset column; what derives from it:\n");
            render_tree(&l.downstream(table, column, None), false, &mut tree);
        }
        let _ = write!(s, "```text\n{tree}```");
        s
    }

    fn line_of(&self, file: &Path, span: Option<(usize, usize)>) -> String {
        match (self.text(file), span) {
            (Some(t), Some((o, _))) => format!(":{}", relspec_core::error::line_col(&t, o).0),
            _ => String::new(),
        }
    }

    /// Where the name at `offset` is declared.
    pub fn definition(&mut self, file: &Path, offset: usize) -> Option<Target> {
        let (sym, _) = self.symbol_at(file, offset)?;
        self.declaration(&sym)
    }

    /// The declaration of a symbol.
    pub fn declaration(&mut self, sym: &Symbol) -> Option<Target> {
        let spec = self.spec()?;
        let at = |file: &Path, span: Option<(usize, usize)>| Target {
            file: file.to_path_buf(),
            span: span.unwrap_or((0, 0)),
        };
        match sym {
            Symbol::Dataset(n) => spec.datasets.get(n).map(|d| at(&d.file, d.span)),
            Symbol::Contract(n) => spec.contracts.get(n).map(|c| at(&c.file, c.span)),
            Symbol::Rule(n) => self.project_shared().decl(n).map(|d| at(&d.origin.file, d.origin.span)),
            Symbol::Param(n) => {
                let m = self.manifest_rel();
                let text = self.text(&m)?;
                let sec = text.find("[params]")?;
                let key = text::occurrences(&text, (sec, text.len() - sec), n).into_iter().next()?;
                Some(Target { file: m, span: key })
            }
            Symbol::Column { table, column } => {
                if self.is_dataset(table) {
                    return self.declaration(&Symbol::Dataset(table.clone()));
                }
                // The place the rule names its output column (`AS col`, `"col"`), else the rule.
                let d = self.project_shared().decl(table)?.clone();
                let (text, range) = self.rule_extent(&d)?;
                let hits = text::occurrences(&text, range, column);
                let best = hits
                    .iter()
                    .find(|(o, _)| text[..*o].trim_end().to_ascii_lowercase().ends_with(" as"))
                    .or(hits.last())
                    .copied();
                Some(Target { file: d.origin.file.clone(), span: best.or(d.origin.span).unwrap_or((0, 0)) })
            }
        }
    }

    /// Where the name at `offset` is used: for a dataset or rule, its
    /// occurrences in the rules that read it (plus the declaration when
    /// `include_decl`).
    pub fn references(&mut self, file: &Path, offset: usize, include_decl: bool) -> Vec<Target> {
        let Some((sym, _)) = self.symbol_at(file, offset) else { return vec![] };
        let mut out = Vec::new();
        if include_decl && let Some(t) = self.declaration(&sym) {
            out.push(t);
        }
        let name = match &sym {
            Symbol::Dataset(n) | Symbol::Rule(n) => n.clone(),
            Symbol::Contract(n) | Symbol::Param(n) => n.clone(),
            Symbol::Column { column, .. } => column.clone(),
        };
        let readers: Vec<Arc<RuleDecl>> = {
            let p = self.project_shared();
            let g = p.graph();
            g.deps
                .iter()
                .filter(|(_, ds)| match &sym {
                    Symbol::Dataset(n) | Symbol::Rule(n) => ds.iter().any(|d| d.name() == n),
                    Symbol::Column { table, .. } => ds.iter().any(|d| d.name() == table),
                    _ => true,
                })
                .filter_map(|(r, _)| p.decl(r).cloned())
                .collect()
        };
        for d in readers {
            let Some((text, range)) = self.rule_extent(&d) else { continue };
            let hits: Vec<(usize, usize)> = text::occurrences(&text, range, &name)
                .into_iter()
                .filter(|(o, _)| !matches!(sym, Symbol::Param(_)) || text[..*o].ends_with('$'))
                .collect();
            if hits.is_empty() && matches!(sym, Symbol::Dataset(_) | Symbol::Rule(_)) {
                out.push(Target { file: d.origin.file.clone(), span: range });
            }
            out.extend(hits.into_iter().map(|span| Target { file: d.origin.file.clone(), span }));
        }
        out.dedup();
        out
    }

    /// Completions at `offset`: columns after `table.` or `alias.`; inside
    /// a rule, the columns of the tables it names and every dataset and rule
    /// name; after `$`, the parameters.
    pub fn completions(&mut self, file: &Path, offset: usize) -> Vec<Completion> {
        let Some(text) = self.text(file) else { return vec![] };
        let (prefix, qualifier) = text::prefix_at(&text, offset);
        let starts = |s: &str| s.to_lowercase().starts_with(&prefix.to_lowercase());
        let Some(spec) = self.spec() else { return vec![] };
        let rule = self.rule_at(file, offset);
        let mut out = Vec::new();
        if text[..offset.min(text.len()) - prefix.len()].ends_with('$') {
            return spec
                .params
                .iter()
                .filter(|(k, _)| starts(k))
                .map(|(k, v)| Completion { label: k.clone(), kind: CompletionKind::Param, detail: v.sql_literal() })
                .collect();
        }
        if let Some(q) = qualifier {
            let Some(t) = self.resolve_qualifier(rule.as_deref(), q) else { return vec![] };
            for (c, ty, _) in self.columns_of(&t).unwrap_or_default() {
                if starts(&c) {
                    out.push(Completion { label: c, kind: CompletionKind::Column, detail: format!("{t}: {ty}") });
                }
            }
            return out;
        }
        if let Some(r) = &rule {
            let (tables, _) = self.scope(r);
            let mut seen = BTreeSet::new();
            for t in tables.iter().filter(|t| **t != r.name) {
                for (c, ty, _) in self.columns_of(t).unwrap_or_default() {
                    if starts(&c) && seen.insert(c.clone()) {
                        out.push(Completion { label: c, kind: CompletionKind::Column, detail: format!("{t}: {ty}") });
                    }
                }
            }
        }
        for name in spec.datasets.keys().filter(|n| starts(n)) {
            out.push(Completion { label: name.clone(), kind: CompletionKind::Dataset, detail: "dataset".into() });
        }
        let rules: Vec<String> = self.project_shared().graph().deps.keys().filter(|n| starts(n)).cloned().collect();
        for name in rules {
            if rule.as_ref().is_some_and(|r| r.name == name) {
                continue;
            }
            out.push(Completion { label: name, kind: CompletionKind::Rule, detail: "rule".into() });
        }
        out
    }

    /// Quick fixes for diagnostics in `file` that overlap `[start, end]`:
    /// apply a "did you mean `x`?" suggestion.
    pub fn fixes(&self, file: &Path, start: usize, end: usize) -> Vec<Fix> {
        let Some(text) = self.text(file) else { return vec![] };
        let mut out = Vec::new();
        for d in &self.errors {
            let Some(loc) = &d.location else { continue };
            let Some((s, l)) = loc.span else { continue };
            if loc.file != file || s > end || s + l < start {
                continue;
            }
            let Some(sugg) = d.help.as_deref().and_then(suggestion) else { continue };
            let Some(old) = text.get(s..s + l) else { continue };
            let name_like = !old.is_empty() && old.chars().all(|c| is_name_char(c) || c == '.' || c == '$');
            if !name_like || old == sugg {
                continue;
            }
            out.push(Fix {
                title: format!("Replace `{old}` with `{sugg}`"),
                file: file.to_path_buf(),
                span: (s, l),
                replacement: sugg.to_string(),
            });
        }
        out
    }
}

/// The name in a "did you mean `x`?" help text.
pub fn suggestion(help: &str) -> Option<&str> {
    let rest = &help[help.find("did you mean `")? + "did you mean `".len()..];
    let name = &rest[..rest.find('`')?];
    (!name.is_empty()).then_some(name)
}

fn table<'a>(s: &mut String, cols: impl Iterator<Item = (&'a str, &'a str, bool)>) {
    s.push_str("| column | type |\n|---|---|\n");
    for (n, t, nullable) in cols {
        let _ = writeln!(s, "| `{n}` | `{t}`{} |", if nullable { "" } else { " NOT NULL" });
    }
}

/// Names in `text` with their byte ranges.
fn words(text: &str) -> Vec<(&str, usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_name_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((&text[s..i], s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((&text[s..], s, text.len()));
    }
    out
}

/// SQL words that can follow a table name and are not an alias.
fn is_keyword(w: &str) -> bool {
    const KW: &[&str] = &[
        "on",
        "where",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "full",
        "cross",
        "group",
        "order",
        "union",
        "limit",
        "having",
        "using",
        "natural",
        "as",
        "select",
        "from",
        "and",
        "or",
        "not",
        "in",
        "is",
        "with",
        "qualify",
        "window",
        "except",
        "intersect",
        "offset",
        "lateral",
        "semi",
        "anti",
        "all",
    ];
    KW.iter().any(|k| k.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestion_is_read_from_help() {
        assert_eq!(suggestion("did you mean `cst_callsites`?"), Some("cst_callsites"));
        assert_eq!(suggestion("did you mean `c.callsite_id`?"), Some("c.callsite_id"));
        assert_eq!(suggestion("add a contract"), None);
    }

    #[test]
    fn words_split_on_non_name_chars() {
        let w: Vec<&str> = words("FROM a AS x, b.c").into_iter().map(|w| w.0).collect();
        assert_eq!(w, ["FROM", "a", "AS", "x", "b", "c"]);
    }
}
