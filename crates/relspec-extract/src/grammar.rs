//! The grammar table: per language, its tree-sitter grammar and how its
//! nodes map to defs, calls and imports. A new language is one entry here
//! (and its name and extensions in `relspec_spec::workspace::LANGUAGES`).

use crate::cst::{Node, Span, span};
use tree_sitter::Node as TsNode;

/// Callee name, receiver, the name's span and the call kind.
pub(crate) type Callee = (String, Option<String>, Span, &'static str);

/// Receives one imported item: module, name, alias, span.
pub(crate) type ImportSink<'a> = &'a mut dyn FnMut(String, Option<String>, Option<String>, Span);

/// One language's extraction rules.
pub struct Grammar {
    /// Name as `[sources]` writes it.
    pub name: &'static str,
    /// The tree-sitter grammar.
    pub language: fn() -> tree_sitter::Language,
    /// Joins qualified names.
    pub separator: &'static str,
    pub(crate) classify: for<'t> fn(TsNode<'t>, &[u8], Option<&'static str>) -> Node<'t>,
    pub(crate) callee: fn(TsNode, &[u8]) -> Callee,
    pub(crate) imports: fn(TsNode, &[u8], ImportSink),
}

/// Every grammar relspec parses.
pub static GRAMMARS: &[Grammar] = &[
    Grammar {
        name: "python",
        language: || tree_sitter_python::LANGUAGE.into(),
        separator: ".",
        classify: python_classify,
        callee: python_callee,
        imports: python_imports,
    },
    Grammar {
        name: "rust",
        language: || tree_sitter_rust::LANGUAGE.into(),
        separator: "::",
        classify: rust_classify,
        callee: rust_callee,
        imports: rust_imports,
    },
];

/// The grammar named `name`.
pub fn grammar(name: &str) -> Option<&'static Grammar> {
    GRAMMARS.iter().find(|g| g.name == name)
}

fn text(n: TsNode, src: &[u8]) -> String {
    String::from_utf8_lossy(&src[n.byte_range()]).into_owned()
}

fn def<'t>(kind: &'static str, name: Option<TsNode<'t>>) -> Node<'t> {
    match name {
        Some(name) => Node::Def { kind, name, scope_name: None, qualified: None },
        None => Node::Other,
    }
}

fn python_classify<'t>(n: TsNode<'t>, _src: &[u8], inside: Option<&'static str>) -> Node<'t> {
    match n.kind() {
        "function_definition" => {
            def(if inside == Some("class") { "method" } else { "function" }, n.child_by_field_name("name"))
        }
        "class_definition" => def("class", n.child_by_field_name("name")),
        "call" => match n.child_by_field_name("function") {
            Some(function) => Node::Call { function, macro_call: false },
            None => Node::Other,
        },
        "import_statement" | "import_from_statement" => Node::Import,
        _ => Node::Other,
    }
}

fn python_callee(f: TsNode, src: &[u8]) -> Callee {
    match f.kind() {
        "identifier" => (text(f, src), None, span(f), "call"),
        "attribute" => match (f.child_by_field_name("object"), f.child_by_field_name("attribute")) {
            (Some(o), Some(a)) => (text(a, src), Some(text(o, src)), span(a), "method"),
            _ => (text(f, src), None, span(f), "call"),
        },
        _ => (text(f, src), None, span(f), "call"),
    }
}

fn python_imports(n: TsNode, src: &[u8], out: ImportSink) {
    let mut c = n.walk();
    if n.kind() == "import_statement" {
        for item in n.children_by_field_name("name", &mut c) {
            match item.kind() {
                "aliased_import" => {
                    let module = item.child_by_field_name("name").map(|x| text(x, src)).unwrap_or_default();
                    let alias = item.child_by_field_name("alias").map(|x| text(x, src));
                    out(module, None, alias, span(item));
                }
                _ => out(text(item, src), None, None, span(item)),
            }
        }
        return;
    }
    let module = n.child_by_field_name("module_name").map(|x| text(x, src)).unwrap_or_default();
    let mut any = false;
    for item in n.children_by_field_name("name", &mut c) {
        any = true;
        match item.kind() {
            "aliased_import" => {
                let name = item.child_by_field_name("name").map(|x| text(x, src));
                let alias = item.child_by_field_name("alias").map(|x| text(x, src));
                out(module.clone(), name, alias, span(item));
            }
            _ => out(module.clone(), Some(text(item, src)), None, span(item)),
        }
    }
    if !any {
        let mut c = n.walk();
        if let Some(w) = n.named_children(&mut c).find(|x| x.kind() == "wildcard_import") {
            out(module, Some("*".into()), None, span(w));
        }
    }
}

/// The base name of a Rust type (`Foo` of `Foo<T>`, `a::Foo`, `&Foo`).
fn rust_type_name(t: TsNode, src: &[u8]) -> String {
    match t.kind() {
        "generic_type" => t.child_by_field_name("type").map(|x| rust_type_name(x, src)).unwrap_or_else(|| text(t, src)),
        "scoped_type_identifier" => t.child_by_field_name("name").map(|x| text(x, src)).unwrap_or_else(|| text(t, src)),
        "reference_type" | "pointer_type" => {
            t.child_by_field_name("type").map(|x| rust_type_name(x, src)).unwrap_or_else(|| text(t, src))
        }
        _ => text(t, src),
    }
}

fn rust_classify<'t>(n: TsNode<'t>, src: &[u8], inside: Option<&'static str>) -> Node<'t> {
    let name = || n.child_by_field_name("name");
    match n.kind() {
        "function_item" | "function_signature_item" => {
            def(if matches!(inside, Some("impl" | "trait")) { "method" } else { "function" }, name())
        }
        "struct_item" => def("struct", name()),
        "enum_item" => def("enum", name()),
        "union_item" => def("union", name()),
        "trait_item" => def("trait", name()),
        "mod_item" => def("module", name()),
        "type_item" => def("type", name()),
        "const_item" => def("const", name()),
        "static_item" => def("static", name()),
        "macro_definition" => def("macro", name()),
        "impl_item" => match n.child_by_field_name("type") {
            Some(t) => {
                let ty = rust_type_name(t, src);
                let qualified = match n.child_by_field_name("trait") {
                    Some(tr) => format!("impl {} for {ty}", text(tr, src)),
                    None => format!("impl {ty}"),
                };
                Node::Def { kind: "impl", name: t, scope_name: Some(ty), qualified: Some(qualified) }
            }
            None => Node::Other,
        },
        "call_expression" => match n.child_by_field_name("function") {
            Some(function) => Node::Call { function, macro_call: false },
            None => Node::Other,
        },
        "macro_invocation" => match n.child_by_field_name("macro") {
            Some(function) => Node::Call { function, macro_call: true },
            None => Node::Other,
        },
        "use_declaration" => Node::Import,
        _ => Node::Other,
    }
}

fn rust_callee(f: TsNode, src: &[u8]) -> Callee {
    match f.kind() {
        "identifier" => (text(f, src), None, span(f), "call"),
        "field_expression" => match (f.child_by_field_name("value"), f.child_by_field_name("field")) {
            (Some(v), Some(x)) => (text(x, src), Some(text(v, src)), span(x), "method"),
            _ => (text(f, src), None, span(f), "call"),
        },
        "scoped_identifier" => match f.child_by_field_name("name") {
            Some(x) => (text(x, src), f.child_by_field_name("path").map(|p| text(p, src)), span(x), "call"),
            None => (text(f, src), None, span(f), "call"),
        },
        "generic_function" => match f.child_by_field_name("function") {
            Some(inner) => rust_callee(inner, src),
            None => (text(f, src), None, span(f), "call"),
        },
        _ => (text(f, src), None, span(f), "call"),
    }
}

fn rust_imports(n: TsNode, src: &[u8], out: ImportSink) {
    fn join(prefix: &str, p: &str) -> String {
        match (prefix.is_empty(), p.is_empty()) {
            (true, _) => p.to_string(),
            (_, true) => prefix.to_string(),
            _ => format!("{prefix}::{p}"),
        }
    }
    fn walk(t: TsNode, src: &[u8], prefix: &str, alias: Option<String>, out: ImportSink) {
        match t.kind() {
            "scoped_identifier" => {
                let path = t.child_by_field_name("path").map(|p| text(p, src)).unwrap_or_default();
                let name = t.child_by_field_name("name").map(|x| text(x, src));
                out(join(prefix, &path), name, alias, span(t));
            }
            "identifier" | "self" | "crate" | "super" => out(prefix.to_string(), Some(text(t, src)), alias, span(t)),
            "use_as_clause" => {
                let alias = t.child_by_field_name("alias").map(|x| text(x, src));
                if let Some(p) = t.child_by_field_name("path") {
                    walk(p, src, prefix, alias, out);
                }
            }
            "scoped_use_list" => {
                let path = t.child_by_field_name("path").map(|p| text(p, src)).unwrap_or_default();
                if let Some(list) = t.child_by_field_name("list") {
                    walk(list, src, &join(prefix, &path), None, out);
                }
            }
            "use_list" => {
                let mut c = t.walk();
                for item in t.named_children(&mut c) {
                    walk(item, src, prefix, None, out);
                }
            }
            "use_wildcard" => {
                let mut c = t.walk();
                let path = t.named_children(&mut c).next().map(|p| text(p, src)).unwrap_or_default();
                out(join(prefix, &path), Some("*".into()), None, span(t));
            }
            _ => {}
        }
    }
    if let Some(arg) = n.child_by_field_name("argument") {
        walk(arg, src, "", None, out);
    }
}
