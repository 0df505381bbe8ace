// Live parts of the pages, without inline script (the pages' Content-Security-Policy
// allows scripts from this origin only): tables with data-refresh poll their rows.
"use strict";
(function () {
  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    return td;
  }
  function nodes(table, v) {
    var body = table.tBodies[0];
    body.textContent = "";
    v.nodes.forEach(function (n) {
      var tr = document.createElement("tr");
      tr.appendChild(cell(n.node_id));
      tr.appendChild(cell(n.hostname));
      tr.appendChild(cell(n.applied_version === null ? "-" : String(n.applied_version)));
      tr.appendChild(cell(n.state, "state state-" + n.state));
      body.appendChild(tr);
    });
    var version = document.getElementById("snapshot-version");
    if (version) { version.textContent = String(v.snapshot_version); }
  }
  function deployments(table, v) {
    v.deployments.forEach(function (d) {
      var row = table.querySelector("tr[data-gateway=\"" + CSS.escape(d.gateway) + "\"] .nodes");
      if (row) { row.textContent = d.nodes; }
    });
  }
  function refresh(table) {
    fetch(table.dataset.refresh, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        if (!v) { return; }
        if (table.dataset.shape === "deployments") { deployments(table, v); } else { nodes(table, v); }
      })
      .catch(function () {});
  }
  document.querySelectorAll("table[data-refresh]").forEach(function (t) {
    setInterval(function () { refresh(t); }, 1000);
  });
})();
