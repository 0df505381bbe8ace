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
      var row = table.querySelector("tr[data-key=\"" + CSS.escape(d.key) + "\"] .nodes");
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

  // An app's folder upload: each file's path inside the chosen folder, in the order the
  // files are sent (browsers send only the file's own name).
  var folder = document.getElementById("upload-folder");
  if (folder) {
    folder.addEventListener("change", function () {
      document.getElementById("upload-paths").value = Array.prototype.map
        .call(folder.files, function (f) { return f.webkitRelativePath || f.name; })
        .join("\n");
    });
  }

  // Try Out: a short-lived token for the chosen application, obtained by the portal on
  // the server, then the request straight from the browser to the chosen gateway.
  var tryout = document.getElementById("tryout");
  if (tryout) {
    tryout.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = tryout.elements;
      var gateway = f.gateway.options[f.gateway.selectedIndex];
      var form = new URLSearchParams();
      form.set("csrf", tryout.dataset.csrf);
      form.set("application", f.application.value);
      form.set("type", gateway.dataset.type === "sandbox" ? "sandbox" : "production");
      var show = function (status, headers, body) {
        document.getElementById("tryout-result").hidden = false;
        document.getElementById("tryout-status").textContent = status;
        document.getElementById("tryout-headers-out").textContent = headers;
        document.getElementById("tryout-body-out").textContent = body;
      };
      fetch(tryout.dataset.token, { method: "POST", credentials: "same-origin", body: form })
        .then(function (r) { return r.json().then(function (v) { return [r.ok, v]; }); })
        .then(function (res) {
          if (!res[0]) { throw new Error(res[1].message || "no token"); }
          var headers = { authorization: "Bearer " + res[1].access_token };
          f.headers.value.split("\n").forEach(function (line) {
            var i = line.indexOf(":");
            if (i > 0) { headers[line.slice(0, i).trim()] = line.slice(i + 1).trim(); }
          });
          var path = f.path.value.charAt(0) === "/" ? f.path.value : "/" + f.path.value;
          var url = gateway.value.replace(/\/$/, "") + (path === "/" ? "/" : path);
          if (f.query.value) { url += "?" + f.query.value.replace(/^\?/, ""); }
          var init = { method: f.method.value, headers: headers, mode: "cors", credentials: "omit" };
          if (f.body.value && f.method.value !== "GET") { init.body = f.body.value; }
          return fetch(url, init);
        })
        .then(function (r) {
          var lines = [];
          r.headers.forEach(function (v, k) { lines.push(k + ": " + v); });
          return r.text().then(function (t) { show(r.status + " " + r.statusText, lines.join("\n"), t); });
        })
        .catch(function (e) { show("failed", "", String(e.message || e)); });
    });
  }
})();
