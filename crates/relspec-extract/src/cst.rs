//! Facts from one parsed file: definitions, call sites, imports and syntax
//! errors, found in one pre-order walk of the tree-sitter tree.
//!
//! Architecture invariant: a def's id is derived from the file path, its
//! qualified name and its ordinal among same-named defs of the file, never
//! from byte offsets or row order, so editing a body changes no other id.

use crate::grammar::Grammar;

/// A span: bytes plus 0-based line and byte column (as tree-sitter and SCIP count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start_byte: usize,
    /// One past the last byte.
    pub end_byte: usize,
    /// 0-based start line.
    pub start_line: usize,
    /// 0-based start column (bytes).
    pub start_col: usize,
    /// 0-based end line.
    pub end_line: usize,
    /// 0-based end column (bytes).
    pub end_col: usize,
}

impl Span {
    fn of(n: tree_sitter::Node) -> Span {
        let (s, e) = (n.start_position(), n.end_position());
        Span {
            start_byte: n.start_byte(),
            end_byte: n.end_byte(),
            start_line: s.row,
            start_col: s.column,
            end_line: e.row,
            end_col: e.column,
        }
    }
}

/// A definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    /// Stable id (path, qualified name, ordinal).
    pub id: String,
    /// Its own name.
    pub name: String,
    /// Names of the enclosing defs and its own, joined by the language's separator.
    pub qualified: String,
    /// `function`, `method`, `class`, `struct`, `enum`, `trait`, `impl`, `module`, ...
    pub kind: &'static str,
    /// The whole definition.
    pub span: Span,
    /// Its name.
    pub name_span: Span,
    /// The enclosing def's id.
    pub parent: Option<String>,
}

/// A call site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The innermost def it is in.
    pub enclosing: Option<String>,
    /// The called name (last segment: `b` of `a.b()` or `A::b()`).
    pub callee: String,
    /// The whole callee expression as written.
    pub callee_text: String,
    /// What it is called on (`a` of `a.b()`, `A` of `A::b()`).
    pub receiver: Option<String>,
    /// `call`, `method` (on a receiver value) or `macro`.
    pub kind: &'static str,
    /// The called name's span (what a SCIP reference occurrence covers).
    pub span: Span,
    /// The whole call expression.
    pub call_span: Span,
}

/// An imported name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The innermost def it is in.
    pub enclosing: Option<String>,
    /// The module path (`os.path`, `std::collections`).
    pub module: String,
    /// The imported name (`None` for `import os.path`).
    pub name: Option<String>,
    /// `as` alias.
    pub alias: Option<String>,
    /// The imported item as written.
    pub span: Span,
}

/// A syntax error (the rest of the file is still extracted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxIssue {
    /// Where.
    pub span: Span,
    /// What (`syntax error`, `missing ";"`).
    pub message: String,
}

/// Everything extracted from one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Definitions, in source order.
    pub defs: Vec<Def>,
    /// Call sites, in source order.
    pub calls: Vec<Call>,
    /// Imports, in source order.
    pub imports: Vec<Import>,
    /// Syntax errors, in source order.
    pub errors: Vec<SyntaxIssue>,
}

/// A def's stable id.
pub fn def_id(path: &str, qualified: &str, ordinal: usize) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"relspec/def/v1\0");
    h.update(path.as_bytes());
    h.update(b"\0");
    h.update(qualified.as_bytes());
    h.update(b"\0");
    h.update(ordinal.to_string().as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// What a node is, for one grammar.
pub(crate) enum Node<'t> {
    /// A def: kind, name node, and the name used for members' qualified names.
    Def { kind: &'static str, name: tree_sitter::Node<'t>, scope_name: Option<String>, qualified: Option<String> },
    /// A call: callee expression.
    Call { function: tree_sitter::Node<'t>, macro_call: bool },
    /// An import statement.
    Import,
    /// Nothing to record.
    Other,
}

struct Scope {
    node: usize,
    id: String,
    path_name: String,
    kind: &'static str,
}

/// Walk a tree once, collecting facts.
pub fn extract(grammar: &Grammar, path: &str, src: &[u8], tree: &tree_sitter::Tree) -> Facts {
    let text = |n: tree_sitter::Node| String::from_utf8_lossy(&src[n.byte_range()]).into_owned();
    let mut facts = Facts::default();
    let mut scopes: Vec<Scope> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut cursor = tree.walk();
    loop {
        let node = cursor.node();
        // Enter.
        if node.is_error() {
            facts.errors.push(SyntaxIssue { span: Span::of(node), message: "syntax error".into() });
        } else if node.is_missing() {
            facts.errors.push(SyntaxIssue { span: Span::of(node), message: format!("missing `{}`", node.kind()) });
        }
        let enclosing = scopes.last().map(|s| s.id.clone());
        match (grammar.classify)(node, src, scopes.last().map(|s| s.kind)) {
            Node::Def { kind, name, scope_name, qualified } => {
                let own = text(name);
                let prefix: Vec<&str> = scopes.iter().map(|s| s.path_name.as_str()).collect();
                let member = qualified.unwrap_or_else(|| own.clone());
                let q = if prefix.is_empty() {
                    member
                } else {
                    format!("{}{}{member}", prefix.join(grammar.separator), grammar.separator)
                };
                let n = seen.entry(q.clone()).or_insert(0);
                let id = def_id(path, &q, *n);
                *n += 1;
                facts.defs.push(Def {
                    id: id.clone(),
                    name: own.clone(),
                    qualified: q,
                    kind,
                    span: Span::of(node),
                    name_span: Span::of(name),
                    parent: enclosing,
                });
                scopes.push(Scope { node: node.id(), id, path_name: scope_name.unwrap_or(own), kind });
            }
            Node::Call { function, macro_call } => {
                let (callee, receiver, span, kind) = (grammar.callee)(function, src);
                facts.calls.push(Call {
                    enclosing,
                    callee,
                    callee_text: text(function),
                    receiver,
                    kind: if macro_call { "macro" } else { kind },
                    span,
                    call_span: Span::of(node),
                });
            }
            Node::Import => (grammar.imports)(node, src, &mut |module, name, alias, span| {
                facts.imports.push(Import { enclosing: enclosing.clone(), module, name, alias, span })
            }),
            Node::Other => {}
        }
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            // Leave.
            if scopes.last().is_some_and(|s| s.node == cursor.node().id()) {
                scopes.pop();
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return facts;
            }
        }
    }
}

pub(crate) fn span(n: tree_sitter::Node) -> Span {
    Span::of(n)
}
