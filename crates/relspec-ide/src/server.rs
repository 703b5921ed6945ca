//! `relspec lsp`: the Language Server Protocol over stdio (`lsp-server`, the
//! transport rust-analyzer uses, with `lsp-types`).
//!
//! One thread owns the [`Ide`]. It takes messages in order; a batch of
//! queued edits is applied before the workspace is analyzed once, and
//! diagnostics are published for the files whose diagnostics changed
//! (an empty list clears a file). Requests are answered on the latest text:
//! a pending analysis runs first. The disk is watched as `watch` does
//! (notify, the cache and output dirs ignored), so a change made outside
//! the editor (a `git checkout`, a new data file) is seen too; a file open
//! in the editor is read from its buffer until it is closed.
//!
//! Architecture invariant: stdout carries only protocol messages; logs go
//! to stderr (tracing).

use crate::features::CompletionKind;
use crate::host::Ide;
use crate::text::LineIndex;
use crossbeam_channel::{Receiver, select};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types as lsp;
use relspec_core::error::Diag;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Serve the workspace at `manifest` over stdin/stdout until the client
/// says `exit`.
pub fn run_stdio(manifest: &Path, params: &[(String, String)]) -> Result<(), Error> {
    let (conn, io) = Connection::stdio();
    serve(&conn, manifest, params)?;
    drop(conn);
    io.join()?;
    Ok(())
}

/// What the server can do.
pub fn capabilities() -> lsp::ServerCapabilities {
    lsp::ServerCapabilities {
        text_document_sync: Some(lsp::TextDocumentSyncKind::FULL.into()),
        hover_provider: Some(lsp::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lsp::OneOf::Left(true)),
        references_provider: Some(lsp::OneOf::Left(true)),
        completion_provider: Some(lsp::CompletionOptions {
            trigger_characters: Some(vec![".".into(), "$".into()]),
            ..Default::default()
        }),
        code_action_provider: Some(lsp::CodeActionProviderCapability::Simple(true)),
        ..Default::default()
    }
}

/// Run the protocol on `conn` (after `initialize`) until shutdown.
pub fn serve(conn: &Connection, manifest: &Path, params: &[(String, String)]) -> Result<(), Error> {
    let init = conn.initialize(serde_json::to_value(capabilities())?)?;
    let init: lsp::InitializeParams = serde_json::from_value(init)?;
    let manifest = workspace_manifest(&init, manifest);
    let mut s = State { conn, ide: None, published: HashMap::new(), dirty: true };
    match Ide::open(&manifest, params) {
        Ok(ide) => s.ide = Some(ide),
        Err(e) => s.show(lsp::MessageType::WARNING, format!("relspec: {}: {}", manifest.display(), e.kind)),
    }
    let (fs_tx, fs_rx) = crossbeam_channel::unbounded::<Vec<PathBuf>>();
    let _watcher = s.ide.as_ref().and_then(|ide| {
        use notify::Watcher;
        // Reads (access events) are not changes: the analysis itself reads files.
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
            Ok(ev) if ev.need_rescan() => {
                let _ = fs_tx.send(Vec::new());
            }
            Ok(ev) if !ev.kind.is_access() => {
                let _ = fs_tx.send(ev.paths);
            }
            _ => {}
        })
        .ok()?;
        w.watch(ide.root(), notify::RecursiveMode::Recursive).ok()?;
        Some(w)
    });
    loop {
        if s.dirty && conn.receiver.is_empty() && fs_rx.is_empty() {
            s.check();
        }
        select! {
            recv(conn.receiver) -> msg => {
                let Ok(msg) = msg else { return Ok(()) };
                match msg {
                    Message::Request(req) => {
                        if conn.handle_shutdown(&req)? {
                            return Ok(());
                        }
                        if s.dirty {
                            s.check();
                        }
                        let resp = s.request(req);
                        conn.sender.send(resp.into())?;
                    }
                    Message::Notification(n) => s.notification(n),
                    Message::Response(_) => {}
                }
            }
            recv(fs_rx) -> paths => {
                if let Ok(paths) = paths {
                    s.disk_changed(paths, &fs_rx);
                }
            }
        }
    }
}

/// The manifest given (`-w`), else the one in the client's workspace folder.
fn workspace_manifest(init: &lsp::InitializeParams, given: &Path) -> PathBuf {
    #[allow(deprecated)]
    let folder = init
        .workspace_folders
        .as_ref()
        .and_then(|f| f.first().map(|f| f.uri.clone()))
        .or_else(|| init.root_uri.clone())
        .and_then(|u| u.to_file_path().ok());
    match folder {
        Some(dir) if !given.is_file() && dir.join("workspace.toml").is_file() => dir.join("workspace.toml"),
        _ => given.to_path_buf(),
    }
}

struct State<'a> {
    conn: &'a Connection,
    ide: Option<Ide>,
    /// File -> diagnostics last published (JSON, to compare).
    published: HashMap<PathBuf, serde_json::Value>,
    /// Inputs changed since the last analysis.
    dirty: bool,
}

impl State<'_> {
    fn send(&self, n: Notification) {
        let _ = self.conn.sender.send(n.into());
    }

    fn show(&self, typ: lsp::MessageType, message: String) {
        self.send(Notification::new("window/showMessage".into(), lsp::ShowMessageParams { typ, message }));
    }

    /// Analyze and publish the diagnostics that changed.
    fn check(&mut self) {
        self.dirty = false;
        let Some(ide) = self.ide.as_mut() else { return };
        let checked = ide.check();
        tracing::debug!(ms = checked.ms, planned = checked.planned, "analyzed");
        let mut now: HashMap<PathBuf, serde_json::Value> = HashMap::new();
        for (file, diags) in &checked.files {
            let text = ide.text(file).or_else(|| std::fs::read_to_string(ide.root().join(file)).ok());
            let list: Vec<lsp::Diagnostic> = diags.iter().map(|d| diagnostic(d, text.as_deref())).collect();
            now.insert(file.clone(), serde_json::to_value(list).unwrap_or_default());
        }
        let root = ide.root().to_path_buf();
        let mut files: Vec<&PathBuf> = now.keys().chain(self.published.keys()).collect();
        files.sort();
        files.dedup();
        for file in files {
            let new = now.get(file).cloned().unwrap_or(serde_json::Value::Array(vec![]));
            if self.published.get(file) == Some(&new)
                || (new == serde_json::json!([]) && !self.published.contains_key(file))
            {
                continue;
            }
            let Ok(uri) = lsp::Url::from_file_path(root.join(file)) else { continue };
            self.send(Notification::new(
                "textDocument/publishDiagnostics".into(),
                serde_json::json!({"uri": uri, "diagnostics": new}),
            ));
        }
        self.published = now.into_iter().filter(|(_, v)| v != &serde_json::json!([])).collect();
    }

    fn disk_changed(&mut self, first: Vec<PathBuf>, more: &Receiver<Vec<PathBuf>>) {
        let Some(ide) = self.ide.as_mut() else { return };
        // An empty batch is notify's "rescan": sync everything.
        let mut rescan = first.is_empty();
        let mut paths = first;
        while let Ok(p) = more.try_recv() {
            rescan |= p.is_empty();
            paths.extend(p);
        }
        if rescan {
            if let Err(e) = ide.project().sync_now() {
                tracing::warn!("sync: {}", e.kind);
            }
            self.dirty = true;
            return;
        }
        let skip: Vec<PathBuf> =
            ide.spec().map(|s| vec![s.cache_path(ide.root()), ide.root().join(&s.output_dir)]).unwrap_or_default();
        paths.retain(|p| {
            !skip.iter().any(|d| p.starts_with(d))
                && !ide.rel(p).is_some_and(|r| ide.has_buffer(&r))
                && !p.components().any(|c| c.as_os_str() == ".git")
        });
        if paths.is_empty() {
            return;
        }
        paths.sort();
        paths.dedup();
        if let Err(e) = ide.sync_disk(&paths) {
            tracing::warn!("sync: {}", e.kind);
        }
        self.dirty = true;
    }

    fn notification(&mut self, n: Notification) {
        tracing::debug!(method = n.method, "notification");
        let Some(ide) = self.ide.as_mut() else { return };
        let res = match n.method.as_str() {
            "textDocument/didOpen" => serde_json::from_value::<lsp::DidOpenTextDocumentParams>(n.params)
                .ok()
                .and_then(|p| Some((rel_of(ide, &p.text_document.uri)?, Some(p.text_document.text)))),
            "textDocument/didChange" => serde_json::from_value::<lsp::DidChangeTextDocumentParams>(n.params)
                .ok()
                .and_then(|p| Some((rel_of(ide, &p.text_document.uri)?, Some(p.content_changes.last()?.text.clone())))),
            "textDocument/didClose" => serde_json::from_value::<lsp::DidCloseTextDocumentParams>(n.params)
                .ok()
                .and_then(|p| Some((rel_of(ide, &p.text_document.uri)?, None))),
            "workspace/didChangeWatchedFiles" => {
                if let Ok(p) = serde_json::from_value::<lsp::DidChangeWatchedFilesParams>(n.params) {
                    let paths: Vec<PathBuf> = p.changes.iter().filter_map(|c| c.uri.to_file_path().ok()).collect();
                    let _ = ide.sync_disk(&paths);
                    self.dirty = true;
                }
                None
            }
            _ => None,
        };
        if let Some((rel, text)) = res {
            if let Err(e) = ide.set_buffer(&rel, text) {
                tracing::warn!("{}: {}", rel.display(), e.kind);
            }
            tracing::debug!(file = %rel.display(), "buffer set");
            self.dirty = true;
        }
    }

    fn request(&mut self, req: Request) -> Response {
        let id = req.id.clone();
        match self.answer(req) {
            Ok(v) => Response::new_ok(id, v),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        }
    }

    fn answer(&mut self, req: Request) -> Result<serde_json::Value, (ErrorCode, String)> {
        let bad = |e: serde_json::Error| (ErrorCode::InvalidParams, e.to_string());
        let Some(ide) = self.ide.as_mut() else { return Ok(serde_json::Value::Null) };
        let out = match req.method.as_str() {
            "textDocument/hover" => {
                let p: lsp::HoverParams = serde_json::from_value(req.params).map_err(bad)?;
                let Some((rel, text, off)) = at(ide, &p.text_document_position_params) else { return Ok(null()) };
                ide.hover(&rel, off).map(|h| {
                    serde_json::to_value(lsp::Hover {
                        contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                            kind: lsp::MarkupKind::Markdown,
                            value: h.markdown,
                        }),
                        range: Some(range(&text, h.span)),
                    })
                })
            }
            "textDocument/definition" => {
                let p: lsp::GotoDefinitionParams = serde_json::from_value(req.params).map_err(bad)?;
                let Some((rel, _, off)) = at(ide, &p.text_document_position_params) else { return Ok(null()) };
                ide.definition(&rel, off).and_then(|t| location(ide, &t.file, t.span)).map(serde_json::to_value)
            }
            "textDocument/references" => {
                let p: lsp::ReferenceParams = serde_json::from_value(req.params).map_err(bad)?;
                let Some((rel, _, off)) = at(ide, &p.text_document_position) else { return Ok(null()) };
                let refs = ide.references(&rel, off, p.context.include_declaration);
                let locs: Vec<lsp::Location> = refs.iter().filter_map(|t| location(ide, &t.file, t.span)).collect();
                Some(serde_json::to_value(locs))
            }
            "textDocument/completion" => {
                let p: lsp::CompletionParams = serde_json::from_value(req.params).map_err(bad)?;
                let Some((rel, _, off)) = at(ide, &p.text_document_position) else { return Ok(null()) };
                let items: Vec<lsp::CompletionItem> = ide
                    .completions(&rel, off)
                    .into_iter()
                    .map(|c| lsp::CompletionItem {
                        label: c.label,
                        kind: Some(match c.kind {
                            CompletionKind::Dataset => lsp::CompletionItemKind::STRUCT,
                            CompletionKind::Rule => lsp::CompletionItemKind::CLASS,
                            CompletionKind::Column => lsp::CompletionItemKind::FIELD,
                            CompletionKind::Param => lsp::CompletionItemKind::VARIABLE,
                        }),
                        detail: Some(c.detail),
                        ..Default::default()
                    })
                    .collect();
                Some(serde_json::to_value(items))
            }
            "textDocument/codeAction" => {
                let p: lsp::CodeActionParams = serde_json::from_value(req.params).map_err(bad)?;
                let Some(rel) = rel_of(ide, &p.text_document.uri) else { return Ok(null()) };
                let Some(text) = ide.text(&rel) else { return Ok(null()) };
                let idx = LineIndex::new(&text);
                let start = idx.offset(&text, p.range.start.line, p.range.start.character);
                let end = idx.offset(&text, p.range.end.line, p.range.end.character);
                let actions: Vec<lsp::CodeActionOrCommand> = ide
                    .fixes(&rel, start, end)
                    .into_iter()
                    .map(|f| {
                        let edit = lsp::TextEdit { range: range(&text, f.span), new_text: f.replacement };
                        let changes = std::collections::HashMap::from([(p.text_document.uri.clone(), vec![edit])]);
                        lsp::CodeActionOrCommand::CodeAction(lsp::CodeAction {
                            title: f.title,
                            kind: Some(lsp::CodeActionKind::QUICKFIX),
                            edit: Some(lsp::WorkspaceEdit { changes: Some(changes), ..Default::default() }),
                            is_preferred: Some(true),
                            ..Default::default()
                        })
                    })
                    .collect();
                Some(serde_json::to_value(actions))
            }
            _ => return Err((ErrorCode::MethodNotFound, format!("unhandled method {}", req.method))),
        };
        match out {
            Some(v) => v.map_err(|e| (ErrorCode::InternalError, e.to_string())),
            None => Ok(null()),
        }
    }
}

fn null() -> serde_json::Value {
    serde_json::Value::Null
}

/// A workspace file's path relative to the root.
fn rel_of(ide: &Ide, uri: &lsp::Url) -> Option<PathBuf> {
    let path = uri.to_file_path().ok()?;
    ide.rel(&path).or_else(|| ide.rel(&path.canonicalize().ok()?))
}

/// File, text and byte offset of a position.
fn at(ide: &Ide, p: &lsp::TextDocumentPositionParams) -> Option<(PathBuf, String, usize)> {
    let rel = rel_of(ide, &p.text_document.uri)?;
    let text = ide.text(&rel)?;
    let off = LineIndex::new(&text).offset(&text, p.position.line, p.position.character);
    Some((rel, text, off))
}

fn range(text: &str, (start, len): (usize, usize)) -> lsp::Range {
    let idx = LineIndex::new(text);
    let (l0, c0) = idx.position(text, start);
    let (l1, c1) = idx.position(text, start + len);
    lsp::Range { start: lsp::Position::new(l0, c0), end: lsp::Position::new(l1, c1) }
}

fn location(ide: &Ide, file: &Path, span: (usize, usize)) -> Option<lsp::Location> {
    let text = ide.text(file).or_else(|| std::fs::read_to_string(ide.root().join(file)).ok())?;
    let uri = lsp::Url::from_file_path(ide.root().join(file)).ok()?;
    Some(lsp::Location { uri, range: range(&text, span) })
}

/// A relspec diagnostic as an LSP one (help text appended to the message).
pub fn diagnostic(d: &Diag, text: Option<&str>) -> lsp::Diagnostic {
    let span = d.location.as_ref().and_then(|l| l.span);
    let range = match (text, span) {
        (Some(t), Some(s)) => range(t, s),
        _ => lsp::Range::default(),
    };
    let mut message = String::new();
    if let Some(r) = &d.rule {
        message.push_str(&format!("rule `{r}`: "));
    }
    message.push_str(&d.kind.to_string());
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    lsp::Diagnostic {
        range,
        severity: Some(lsp::DiagnosticSeverity::ERROR),
        code: Some(lsp::NumberOrString::String(d.code().to_string())),
        source: Some("relspec".into()),
        message,
        ..Default::default()
    }
}
