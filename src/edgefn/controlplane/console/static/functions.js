// Functions: the list, and one function's traffic per version, settings, versions
// (deploy each) and routes, with rollback.

import { call, get, post } from "./api.js";
import { traffic } from "./charts.js";
import { badge, bytes, code, h, replace, shortId, table, when } from "./dom.js";

export async function render(main, [id], screen) {
  if (id) return detail(main, id, screen);
  const list = await get("/functions?limit=200");
  if (!screen.alive()) return;
  replace(
    main,
    h("h2", {}, "Functions"),
    table(
      "Every function this token can see",
      ["Name", "Active version", "Runtime", "Project", "Updated"],
      list.map((fn) => [
        h("a", { href: "#functions/" + encodeURIComponent(fn.id) }, fn.name),
        fn.active_version ? badge(fn.active_version) : h("span", { class: "muted" }, "not deployed"),
        fn.runtime,
        shortId(fn.owner_project_id),
        when(fn.updated_at),
      ]),
      "No functions yet. Create one with the API or `edgefn deploy`.",
    ),
  );
}

const SETTINGS = [
  ["ID", (fn) => code(fn.id)],
  ["Project", (fn) => code(fn.owner_project_id)],
  ["Active version", (fn) => fn.active_version ?? "none"],
  // Each serving route on the edge's URL (`urls`); null when the control plane was not
  // told its edge's URL. A wildcard host is no address to follow: shown, not linked.
  ["Served at", (fn) => {
    if (fn.urls == null) return "unknown: the control plane has no edge URL (EDGEFN_EDGE_URL)";
    if (!fn.urls.length) return "no route";
    return fn.urls.map((url) => (url.includes("*") ? code(url) : h("a", { href: url }, url)));
  }],
  ["Entrypoint", (fn) => code(fn.entrypoint)],
  ["Runtime", (fn) => fn.runtime],
  ["Max execution", (fn) => fn.max_execution_ms + " ms"],
  ["Memory", (fn) => `${fn.memory_pages} pages (${bytes(fn.memory_pages * 65536)})`],
  ["Max response", (fn) => bytes(fn.max_response_bytes)],
  ["Max request", (fn) => (fn.max_request_bytes === null ? "node default" : bytes(fn.max_request_bytes))],
  ["POP selector", (fn) => (fn.pop_selector ? code(fn.pop_selector) : "every node")],
  ["Isolation", (fn) => fn.isolation],
  ["Hot instances", (fn) => `${fn.min_hot_instances}–${fn.max_hot_instances}, idle ${fn.idle_timeout_s} s`],
  ["Key-value", (fn) => (fn.kv?.enabled ? `on, up to ${fn.kv.max_keys} keys` : "off")],
  ["Outbound HTTP", (fn) => {
    const hosts = fn.http_fetch?.allow_hosts ?? [];
    return hosts.length ? hosts.map((host) => code(host)) : "none";
  }],
  ["Environment", (fn) => {
    const names = Object.keys(fn.env ?? {}).sort();
    return names.length ? names.map((name) => code(name)) : "none";
  }],
  ["Created", (fn) => when(fn.created_at)],
  ["Updated", (fn) => when(fn.updated_at)],
];

// The API lists versions oldest first; the page shows the newest 200, newest first.
async function newestVersions(path) {
  const first = await call("GET", path + "/versions?limit=200");
  let versions = first.body;
  if (first.total !== null && first.total > versions.length) {
    versions = await get(`${path}/versions?limit=200&offset=${first.total - 200}`);
  }
  return versions.slice().reverse();
}

async function detail(main, id, screen) {
  const path = "/functions/" + encodeURIComponent(id);
  const [fn, versions, routes] = await Promise.all([
    get(path),
    newestVersions(path),
    get("/routes?limit=200"),
  ]);
  if (!screen.alive()) return;

  const strategy = h(
    "select",
    { id: "deploy-strategy", name: "strategy" },
    ["pull", "canary", "gradual"].map((s) => h("option", { value: s }, s)),
  );
  const status = h("p", { class: "status", role: "status" });
  const act = async (label, call) => {
    status.textContent = label + "…";
    try {
      const dep = await call();
      location.hash = "#deployments/" + encodeURIComponent(fn.id) + "/" + encodeURIComponent(dep.id);
    } catch (exc) {
      status.textContent = "";
      screen.error(exc);
    }
  };
  const deploy = (version) =>
    act(`Deploying ${version}`, () => post(path + "/deploy", { version, strategy: strategy.value }));
  const rollback = () => act("Rolling back", () => post(path + "/rollback", {}));

  const mine = routes.filter((r) => r.function_id === fn.id);
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#functions" }, "Functions"), " / ", fn.name),
    h("h2", {}, fn.name, " ", fn.active_version ? badge(fn.active_version) : null),
    traffic(fn.id, screen),
    h("section", { "aria-labelledby": "settings-title" },
      h("h3", { id: "settings-title" }, "Settings"),
      h("dl", { class: "settings" }, SETTINGS.map(([label, value]) => [
        h("dt", {}, label),
        h("dd", {}, value(fn)),
      ])),
    ),
    h("section", { "aria-labelledby": "versions-title" },
      h("h3", { id: "versions-title" }, "Versions"),
      h("div", { class: "toolbar" },
        h("label", { for: "deploy-strategy" }, "Strategy"), strategy,
        h("button", { type: "button", class: "secondary", onclick: rollback,
          disabled: !fn.active_version }, "Roll back"),
        h("a", { href: "#deployments/" + encodeURIComponent(fn.id) }, "Deployments"),
      ),
      status,
      table(
        "Immutable versions, newest first",
        ["Version", "ABI", "Size", "SHA-256", "Uploaded", ""],
        versions.map((v) => [
          v.version === fn.active_version ? [v.version, " ", badge("active")] : v.version,
          v.abi,
          bytes(v.size),
          h("code", { class: "hash", title: v.sha256 }, v.sha256),
          when(v.created_at),
          h("button", { type: "button", onclick: () => deploy(v.version),
            "aria-label": "Deploy version " + v.version }, "Deploy"),
        ]),
        "No versions uploaded.",
      ),
    ),
    h("section", { "aria-labelledby": "routes-title" },
      h("h3", { id: "routes-title" }, "Routes"),
      table(
        "Requests these routes send to this function",
        ["Host", "Path", "Methods", "Priority", "POP selector"],
        mine.map((r) => [
          code(r.host),
          code(r.path),
          r.methods.join(" "),
          r.priority,
          r.pop_selector ? code(r.pop_selector) : "every node",
        ]),
        "No routes.",
      ),
    ),
  );
}
