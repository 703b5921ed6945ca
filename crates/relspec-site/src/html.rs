//! HTML pages: the index (the DAG, drawn by `assets/graph.js` from
//! `data.js`), a page per rule and per dataset (plain HTML, readable
//! without JavaScript).
//!
//! Architecture invariant: every text from the workspace goes through
//! [`esc`]; pages link only to files of the site (no network, works from
//! `file://`).

use crate::model::{RulePage, Site, dataset_href, rule_href};
use relspec_core::graph::how_name;
use relspec_core::project::DatasetInfo;
use std::fmt::Write;

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(title: &str, depth: usize, body: &str) -> String {
    let up = "../".repeat(depth);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"{up}assets/site.css\"></head>\n<body>\n\
         <header><a class=\"home\" href=\"{up}index.html\">relspec docs</a><span class=\"title\">{t}</span></header>\n\
         <main>\n{body}\n</main>\n</body></html>\n",
        t = esc(title)
    )
}

/// The index: search box, the DAG canvas, a side panel, the error list.
pub fn index(site: &Site) -> String {
    let g = &site.graph;
    let rules = g.nodes.iter().filter(|n| n.kind == "rule").count();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<section class=\"toolbar\"><input id=\"search\" type=\"search\" placeholder=\"Search datasets and rules\" autocomplete=\"off\">\
         <button id=\"fit\" type=\"button\">Fit</button><button id=\"clear\" type=\"button\">Clear focus</button>\
         <span class=\"summary\">{} datasets, {rules} rules, {} edges{}</span></section>",
        g.nodes.len() - rules,
        g.edges.len(),
        site.run.as_ref().map(|r| format!(" · last run {}", esc(r))).unwrap_or_default()
    );
    body.push_str(
        "<section class=\"layout\"><div id=\"canvas\"><svg id=\"dag\" xmlns=\"http://www.w3.org/2000/svg\"></svg></div>\
         <aside id=\"panel\"><p class=\"hint\">Click a node to focus on what it reads and what reads it; \
         drag to pan, wheel to zoom.</p></aside></section>\n",
    );
    if !site.errors.is_empty() {
        body.push_str("<section class=\"errors\"><h2>Problems</h2><ul>");
        for e in &site.errors {
            let _ = write!(body, "<li>{}</li>", esc(e));
        }
        body.push_str("</ul></section>\n");
    }
    body.push_str("<noscript><ul>");
    for n in &g.nodes {
        let _ = write!(body, "<li><a href=\"{}\">{}</a> ({})</li>", esc(&n.href), esc(&n.name), n.kind);
    }
    body.push_str(
        "</ul></noscript>\n<script src=\"assets/data.js\"></script>\n<script src=\"assets/graph.js\"></script>",
    );
    page(&format!("{} — lineage", g.workspace), 0, &body)
}

fn link(site: &Site, name: &str, depth: usize) -> String {
    let up = "../".repeat(depth);
    if site.rules.contains_key(name) {
        format!("<a href=\"{up}{}\">{}</a>", esc(&rule_href(name)), esc(name))
    } else if site.datasets.contains_key(name) || site.dataset_decl.contains_key(name) {
        format!("<a href=\"{up}{}\">{}</a>", esc(&dataset_href(name)), esc(name))
    } else {
        esc(name)
    }
}

/// A rule's page.
pub fn rule(site: &Site, r: &RulePage) -> String {
    let mut b = String::new();
    let _ = write!(b, "<h1>rule <code>{}</code></h1>", esc(&r.name));
    if let Some(d) = &r.description {
        let _ = write!(b, "<p class=\"description\">{}</p>", esc(d));
    }
    let _ = write!(b, "<p>declared in <code>{}</code>", esc(&r.declared));
    if !r.tags.is_empty() {
        let _ = write!(
            b,
            " · tags: {}",
            r.tags.iter().map(|t| format!("<code>{}</code>", esc(t))).collect::<Vec<_>>().join(" ")
        );
    }
    b.push_str("</p>");
    let links = |xs: &[String]| xs.iter().map(|x| link(site, x, 1)).collect::<Vec<_>>().join(", ");
    let _ = write!(b, "<p>reads: {}</p>", if r.reads.is_empty() { "—".into() } else { links(&r.reads) });
    let _ = write!(b, "<p>read by: {}</p>", if r.read_by.is_empty() { "—".into() } else { links(&r.read_by) });
    if !r.errors.is_empty() {
        b.push_str("<section class=\"errors\"><h2>Errors</h2><ul>");
        for e in &r.errors {
            let _ = write!(b, "<li>{}</li>", esc(e));
        }
        b.push_str("</ul></section>");
    }
    b.push_str("<h2>Last build</h2>");
    match &r.last {
        Some(l) => {
            let _ = write!(
                b,
                "<table class=\"kv\" id=\"last-build\"><tr><th>status</th><td class=\"status {s}\">{s}</td></tr>\
                 <tr><th>rows</th><td>{rows}</td></tr><tr><th>time</th><td>{ms:.1} ms</td></tr>\
                 <tr><th>key</th><td><code>{key}</code></td></tr><tr><th>run</th><td><code>{run}</code></td></tr>{why}</table>",
                s = esc(&l.status),
                rows = l.rows.map(|r| r.to_string()).unwrap_or_else(|| "—".into()),
                ms = l.elapsed_ms,
                key = esc(l.key.as_deref().unwrap_or("—")),
                run = esc(&l.run),
                why = if l.reasons.is_empty() {
                    String::new()
                } else {
                    format!("<tr><th>why</th><td>{}</td></tr>", esc(&l.reasons.join("; ")))
                }
            );
        }
        None => b.push_str("<p>not built yet (run <code>relspec build</code>)</p>"),
    }
    b.push_str("<h2>Schema and column lineage</h2>");
    match &r.lineage {
        Some(l) => {
            b.push_str("<table class=\"schema\" id=\"schema\"><tr><th>column</th><th>type</th><th>from</th></tr>");
            for c in &l.columns {
                let from: Vec<String> = c
                    .sources
                    .iter()
                    .map(|s| {
                        format!("{}.<code>{}</code> ({})", link(site, &s.table, 1), esc(&s.column), how_name(s.how))
                    })
                    .collect();
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td><td><code>{}{}</code></td><td>{}</td></tr>",
                    esc(&c.name),
                    esc(&c.data_type),
                    if c.nullable { "" } else { " NOT NULL" },
                    if from.is_empty() { "constant".into() } else { from.join("<br>") }
                );
            }
            b.push_str("</table>");
            if !l.keys.is_empty() {
                let mut grouped: std::collections::BTreeMap<(&str, &str), Vec<&str>> = Default::default();
                for k in &l.keys {
                    let hows = grouped.entry((k.table.as_str(), k.column.as_str())).or_default();
                    if !hows.contains(&how_name(k.how)) {
                        hows.push(how_name(k.how));
                    }
                }
                let keys: Vec<String> = grouped
                    .iter()
                    .map(|((t, c), hows)| format!("{}.<code>{}</code> ({})", link(site, t, 1), esc(c), hows.join(", ")))
                    .collect();
                let _ = write!(b, "<p>rows decided by: {}</p>", keys.join(", "));
            }
        }
        None => b.push_str("<p>not analyzed: the rule, or a rule it reads, has an error</p>"),
    }
    if let Some((name, cols)) = &r.contract {
        let _ = write!(
            b,
            "<h2>Contract <code>{}</code></h2><table class=\"schema\" id=\"contract\"><tr><th>column</th><th>type</th><th>schema</th></tr>",
            esc(name)
        );
        for (c, t) in cols {
            let ok = r.lineage.as_ref().map(|l| l.columns.iter().any(|x| &x.name == c));
            let verdict = match ok {
                Some(true) => "<td class=\"ok\">present</td>",
                Some(false) => "<td class=\"bad\">missing</td>",
                None => "<td>—</td>",
            };
            let _ = write!(b, "<tr><td><code>{}</code></td><td><code>{}</code></td>{verdict}</tr>", esc(c), esc(t));
        }
        b.push_str("</table>");
    }
    if let Some(a) = &r.artifact
        && !a.checks.is_empty()
    {
        b.push_str("<h2>Data checks (last build)</h2><ul id=\"checks\">");
        for c in &a.checks {
            let v = if c.passed { "passed".to_string() } else { format!("FAILED ({} violations)", c.violations) };
            let _ = write!(
                b,
                "<li class=\"{}\"><code>{}</code>: {v}</li>",
                if c.passed { "ok" } else { "bad" },
                esc(&c.check)
            );
        }
        b.push_str("</ul>");
    }
    let _ = write!(b, "<h2>Source</h2><pre class=\"source\"><code>{}</code></pre>", esc(&r.source));
    if let Some(a) = &r.artifact {
        b.push_str("<h2>Plans (last build)</h2>");
        let mut plan = |title: &str, text: &str| {
            let _ = write!(b, "<details><summary>{title}</summary><pre><code>{}</code></pre></details>", esc(text));
        };
        plan("logical", &a.plans.logical);
        plan("optimized", &a.plans.optimized);
        plan("physical", a.plans.physical_metrics.as_deref().unwrap_or(&a.plans.physical));
        if let Some(sql) = &a.plans.sql {
            plan("SQL (unparsed)", sql);
        }
        if !a.kernels.is_empty() {
            b.push_str("<h3>Kernels</h3><ul>");
            for k in &a.kernels {
                let _ = write!(b, "<li><code>{}</code></li>", esc(&serde_json::to_string(k).unwrap_or_default()));
            }
            b.push_str("</ul>");
        }
    }
    page(&format!("rule {}", r.name), 1, &b)
}

/// A dataset's page.
pub fn dataset(site: &Site, name: &str, d: Option<&DatasetInfo>) -> String {
    let mut b = String::new();
    let _ = write!(b, "<h1>dataset <code>{}</code></h1>", esc(name));
    if let Some(decl) = site.dataset_decl.get(name) {
        let _ = write!(b, "<p>declared in <code>{}</code></p>", esc(decl));
    }
    let readers: Vec<String> =
        site.rules.values().filter(|r| r.reads.iter().any(|x| x == name)).map(|r| link(site, &r.name, 1)).collect();
    let _ = write!(b, "<p>read by: {}</p>", if readers.is_empty() { "—".into() } else { readers.join(", ") });
    let Some(d) = d else {
        b.push_str("<p class=\"bad\">cannot be read (see the problems on the index)</p>");
        return page(&format!("dataset {name}"), 1, &b);
    };
    let _ = write!(
        b,
        "<table class=\"kv\" id=\"location\"><tr><th>location</th><td><code>{}</code> ({})</td></tr>\
         <tr><th>format</th><td>{}</td></tr><tr><th>fingerprint</th><td><code>{}</code></td></tr>\
         <tr><th>scan options</th><td><code>{}</code></td></tr></table>",
        esc(&d.location),
        esc(&d.kind),
        esc(&d.format),
        esc(&d.fingerprint),
        esc(&serde_json::to_string(&d.options).unwrap_or_default())
    );
    b.push_str("<h2>Schema</h2><table class=\"schema\" id=\"schema\"><tr><th>column</th><th>type</th></tr>");
    for c in &d.schema {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td><code>{}{}</code></td></tr>",
            esc(&c.name),
            esc(&c.data_type),
            if c.nullable { "" } else { " NOT NULL" }
        );
    }
    let _ = write!(
        b,
        "</table><h2>Files ({})</h2><table class=\"files\"><tr><th>file</th><th>content hash</th></tr>",
        d.files.len()
    );
    const SHOWN: usize = 200;
    for (f, h) in d.files.iter().take(SHOWN) {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(f),
            esc(h.get(..16).unwrap_or(h))
        );
    }
    b.push_str("</table>");
    if d.files.len() > SHOWN {
        let _ = write!(b, "<p>and {} more</p>", d.files.len() - SHOWN);
    }
    page(&format!("dataset {name}"), 1, &b)
}
