// Deployments of one function: each one's state and its nodes' states, and a gated
// rollout's timeline of decisions with their figures; refreshed every two seconds
// while any is in progress or rolling back.

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
    refreshing = deployments.some((d) => d.state === "in_progress" ||
      (d.rollout && d.rollout.state === "rolling_back"));
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
    d.rollout ? rollout(d.rollout) : null,
    table(
      "Nodes",
      ["Node", "State", "Message"],
      d.nodes.map((n) => [code(n.node_id), badge(n.state), n.message ?? ""]),
      "No node matched its targets.",
    ),
  );
}

function figures(f) {
  if (!f) return "no figures";
  const rate = f.error_rate === null ? "-" : (f.error_rate * 100).toFixed(1) + "%";
  const p99 = f.p99_s === null ? "-" : +(f.p99_s * 1000).toPrecision(3) + " ms";
  return `${f.requests} requests, ${f.errors} errors (${rate}), p99 ${p99}`;
}

// A gated rollout: its state and wave (a split's share), why it was rolled back, and each decision.
function rollout(r) {
  return h(
    "section",
    { class: "rollout", "aria-label": "Rollout" },
    h("p", {}, "Rollout ", badge(r.state), ` wave ${r.wave + 1} of ${r.waves}`,
      // A split rollout's waves are shares of the traffic on every node.
      r.percent === null || r.percent === undefined ? null : ` (split ${r.percent}%)`,
      r.rollback_id ? h("span", { class: "muted" }, " rolled back by ", code(r.rollback_id)) : null),
    r.reason ? h("p", { class: "reason" }, r.reason) : null,
    h("ol", { class: "timeline", "aria-label": "Rollout timeline" },
      r.decisions.length
        ? r.decisions.map((d) => h("li", { class: "decision-" + d.action },
          h("span", { class: "muted" }, when(d.at)), " ",
          h("strong", {}, `wave ${d.wave + 1}: ${d.action}`), " ", d.why,
          d.new ? h("div", { class: "muted" },
            "new: ", figures(d.new), "; previous: ", figures(d.previous)) : null))
        : h("li", { class: "empty" }, "No decision yet.")),
  );
}
