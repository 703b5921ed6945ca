// Starts `relspec lsp` for the folder's workspace.toml and connects VS Code
// to it over stdio. Everything else (diagnostics, hover, definitions,
// references, completion, quick fixes) comes from the server.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const cfg = vscode.workspace.getConfiguration("relspec");
  const args = ["lsp"];
  const ws = cfg.get("workspace");
  if (ws) args.unshift("--workspace", ws);
  const folder = vscode.workspace.workspaceFolders && vscode.workspace.workspaceFolders[0];
  const server = { command: cfg.get("path") || "relspec", args, options: { cwd: folder ? folder.uri.fsPath : undefined } };
  client = new LanguageClient("relspec", "relspec", server, {
    documentSelector: [
      { scheme: "file", language: "toml" },
      { scheme: "file", language: "sql" },
    ],
  });
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
