// Deployments of one function: each one's state and its nodes' states, refreshed
// every two seconds while any is in progress.

import { get } from "./api.js";
import { badge, code, h, replace, table, when } from "./dom.js";

const REFRESH_MS = 2000;

export async function render(main, [functionId, deploymentId], screen) {
  const functions = await get("/functions?limit=200");
  if (!screen.alive()) return;
  const picker = h(
    "select",
    { id: "deployments-function", name: "function",
      onchange: (event) => { location.hash = "#deployments/" + encodeURIComponent(event.target.value); } },
    h("option", { value: "", disabled: true, selected: !functionId }, "Choose a function"),
    functions.map((fn) => h("option", { value: fn.id, selected: fn.id === functionId }, fn.name)),
  );
  const list = h("div", { class: "deployments" });
  replace(
    main,
    h("h2", {}, "Deployments"),
    h("div", { class: "toolbar" }, h("label", { for: "deployments-function" }, "Function"), picker,
      functionId ? h("a", { href: "#functions/" + encodeURIComponent(functionId) }, "Function details") : null),
    list,
  );
  if (!functionId) {
    replace(list, h("p", { class: "empty" }, functions.length ? "Choose a function." : "No functions yet."));
    return;
  }
  const path = `/functions/${encodeURIComponent(functionId)}/deployments?limit=20`;
  let refreshing = false;
  const refresh = async () => {
    const deployments = await get(path);
    if (!screen.alive()) return;
    replace(list, deployments.length
      ? deployments.map((d) => card(d, d.id === deploymentId))
      : h("p", { class: "empty" }, "Never deployed."));
    refreshing = deployments.some((d) => d.state === "in_progress");
    list.setAttribute("aria-busy", String(refreshing));
  };
  await refresh();
  screen.every(REFRESH_MS, () => {
    if (refreshing) refresh().catch((exc) => screen.error(exc));
  });
}

function card(d, chosen) {
  return h(
    "article",
    { class: chosen ? "card chosen" : "card", "aria-label": `Deployment ${d.id}` },
    h("header", { class: "card-head" },
      badge(d.state),
      h("strong", {}, d.kind === "rollback" ? "Rollback to " : "Deploy ", d.version),
      d.previous_version ? h("span", { class: "muted" }, "from ", d.previous_version) : null,
      h("span", { class: "muted" }, d.strategy),
      h("span", { class: "muted right" }, when(d.created_at)),
    ),
    h("p", { class: "muted" }, "ID ", code(d.id)),
    table(
      "Nodes",
      ["Node", "State", "Message"],
      d.nodes.map((n) => [code(n.node_id), badge(n.state), n.message ?? ""]),
      "No node matched its targets.",
    ),
  );
}
