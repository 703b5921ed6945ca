// relspec docs: draws the lineage DAG from window.RELSPEC_GRAPH (assets/data.js)
// as SVG, with pan (drag), zoom (wheel), search, and focus on a node's
// upstream and downstream. No dependencies; works from file://.
(function () {
  "use strict";
  var G = window.RELSPEC_GRAPH;
  var svg = document.getElementById("dag");
  if (!G || !svg) return;
  var NS = "http://www.w3.org/2000/svg";
  var COL_W = 280, ROW_H = 52, NODE_W = 210, NODE_H = 34, PAD = 30;
  var n = G.nodes.length;
  var preds = [], succs = [];
  for (var i = 0; i < n; i++) { preds.push([]); succs.push([]); }
  G.edges.forEach(function (e) { succs[e[0]].push(e[1]); preds[e[1]].push(e[0]); });
  function px(node) { return PAD + node.col * COL_W; }
  function py(node) { return PAD + node.row * ROW_H; }
  var W = PAD, H = PAD;
  G.nodes.forEach(function (node) {
    W = Math.max(W, px(node) + NODE_W + PAD);
    H = Math.max(H, py(node) + NODE_H + PAD);
  });
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  var edgesG = el("g", { "class": "edges" }, svg);
  var nodesG = el("g", { "class": "nodes" }, svg);
  var edgeEls = G.edges.map(function (e) {
    var a = G.nodes[e[0]], b = G.nodes[e[1]];
    var x1 = px(a) + NODE_W, y1 = py(a) + NODE_H / 2, x2 = px(b), y2 = py(b) + NODE_H / 2;
    var mx = (x1 + x2) / 2;
    return el("path", {
      "class": "edge", "data-from": a.name, "data-to": b.name,
      d: "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2
    }, edgesG);
  });
  var nodeEls = G.nodes.map(function (node, i) {
    var cls = "node " + node.kind + (node.error ? " error" : "") + (node.status ? " " + node.status : "");
    var g = el("g", { "class": cls, "data-name": node.name, transform: "translate(" + px(node) + "," + py(node) + ")" }, nodesG);
    el("rect", { width: NODE_W, height: NODE_H, rx: 6 }, g);
    var t = el("text", { x: 10, y: 22 }, g);
    t.textContent = node.name.length > 26 ? node.name.slice(0, 25) + "…" : node.name;
    el("title", {}, g).textContent = node.kind + " " + node.name + (node.status ? " (" + node.status + ")" : "");
    g.addEventListener("click", function (ev) { ev.stopPropagation(); focus(i, true); });
    return g;
  });
  svg.setAttribute("data-nodes", String(n));
  svg.setAttribute("data-edges", String(G.edges.length));

  // View box: fit, pan, zoom.
  var vb = { x: 0, y: 0, w: W, h: H };
  function apply() { svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].join(" ")); }
  function fit() {
    var r = svg.getBoundingClientRect(), aspect = r.width > 0 && r.height > 0 ? r.width / r.height : W / H;
    if (W / H > aspect) { vb = { x: 0, y: (H - W / aspect) / 2, w: W, h: W / aspect }; }
    else { vb = { x: (W - H * aspect) / 2, y: 0, w: H * aspect, h: H }; }
    apply();
  }
  function center(i) {
    var node = G.nodes[i];
    vb.x = px(node) + NODE_W / 2 - vb.w / 2;
    vb.y = py(node) + NODE_H / 2 - vb.h / 2;
    apply();
  }
  var drag = null;
  svg.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX, y: ev.clientY }; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    var r = svg.getBoundingClientRect(), s = vb.w / Math.max(1, r.width);
    vb.x -= (ev.clientX - drag.x) * s; vb.y -= (ev.clientY - drag.y) * s;
    drag = { x: ev.clientX, y: ev.clientY };
    apply();
  });
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect();
    var f = Math.exp(ev.deltaY * 0.0015);
    var mx = vb.x + (ev.clientX - r.left) / Math.max(1, r.width) * vb.w;
    var my = vb.y + (ev.clientY - r.top) / Math.max(1, r.height) * vb.h;
    vb.x = mx - (mx - vb.x) * f; vb.y = my - (my - vb.y) * f; vb.w *= f; vb.h *= f;
    apply();
  }, { passive: false });

  // Focus: a node, everything upstream and downstream of it.
  var panel = document.getElementById("panel");
  function walk(start, next) {
    var seen = {}, stack = [start];
    while (stack.length) {
      var k = stack.pop();
      next[k].forEach(function (m) { if (!seen[m]) { seen[m] = true; stack.push(m); } });
    }
    return seen;
  }
  function esc(s) { var d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
  function clearClasses() {
    nodeEls.forEach(function (g) { ["focus", "up", "down", "dim", "match"].forEach(function (c) { g.classList.remove(c); }); });
    edgeEls.forEach(function (e) { e.classList.remove("dim"); e.classList.remove("lit"); });
  }
  function focus(i, updateHash) {
    clearClasses();
    var up = walk(i, preds), down = walk(i, succs);
    nodeEls.forEach(function (g, k) {
      if (k === i) g.classList.add("focus");
      else if (up[k]) g.classList.add("up");
      else if (down[k]) g.classList.add("down");
      else g.classList.add("dim");
    });
    var inSet = function (k) { return k === i || up[k] || down[k]; };
    edgeEls.forEach(function (e, k) {
      var ed = G.edges[k];
      e.classList.add(inSet(ed[0]) && inSet(ed[1]) ? "lit" : "dim");
    });
    var node = G.nodes[i];
    var cols = node.columns.map(function (c) { return "<tr><td><code>" + esc(c[0]) + "</code></td><td><code>" + esc(c[1]) + "</code></td></tr>"; }).join("");
    panel.innerHTML = "<h2>" + esc(node.kind) + " <code>" + esc(node.name) + "</code></h2>" +
      (node.status ? "<p>last build: <span class=\"status " + esc(node.status) + "\">" + esc(node.status) + "</span></p>" : "") +
      (node.error ? "<p class=\"bad\">has an error (see its page)</p>" : "") +
      "<p>" + Object.keys(up).length + " upstream, " + Object.keys(down).length + " downstream</p>" +
      "<p><a id=\"page-link\" href=\"" + esc(node.href) + "\">open the " + esc(node.kind) + " page</a></p>" +
      "<details id=\"columns\"><summary>" + node.columns.length + " columns</summary><table class=\"schema\">" + cols + "</table></details>";
    document.body.setAttribute("data-focus", node.name);
    if (updateHash) history.replaceState(null, "", "#focus=" + encodeURIComponent(node.name));
  }
  function unfocus() {
    clearClasses();
    document.body.removeAttribute("data-focus");
    panel.innerHTML = "<p class=\"hint\">Click a node to focus on what it reads and what reads it; drag to pan, wheel to zoom.</p>";
    history.replaceState(null, "", "#");
  }
  svg.addEventListener("click", function () { if (!drag) return; });
  document.getElementById("clear").addEventListener("click", unfocus);
  document.getElementById("fit").addEventListener("click", fit);

  // Search by name: matches are marked; Enter focuses the first.
  var search = document.getElementById("search");
  function find(q) {
    clearClasses();
    document.body.removeAttribute("data-focus");
    q = q.trim().toLowerCase();
    var first = -1;
    if (!q) return first;
    G.nodes.forEach(function (node, k) {
      if (node.name.toLowerCase().indexOf(q) >= 0) { nodeEls[k].classList.add("match"); if (first < 0) first = k; }
      else nodeEls[k].classList.add("dim");
    });
    return first;
  }
  search.addEventListener("input", function () { find(search.value); });
  search.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    var k = find(search.value);
    if (k >= 0) { focus(k, true); center(k); }
  });

  fit();
  var hash = decodeURIComponent(location.hash.slice(1));
  if (hash.indexOf("focus=") === 0) {
    var name = hash.slice(6);
    var k = G.nodes.findIndex(function (node) { return node.name === name; });
    if (k >= 0) { focus(k, false); }
  } else if (hash.indexOf("q=") === 0) {
    search.value = hash.slice(2);
    find(search.value);
  }
  document.body.setAttribute("data-ready", "true");
})();
