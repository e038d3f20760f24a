// Nodes: every edge node with its POP, labels, status, and last reported load.

import { get } from "./api.js";
import { ago, badge, bytes, code, h, replace, table, when } from "./dom.js";

export async function render(main, _params, screen) {
  const nodes = await get("/nodes?limit=200");
  if (!screen.alive()) return;
  replace(
    main,
    h("h2", {}, "Nodes"),
    table(
      "Edge nodes registered with this control plane",
      ["ID", "POP", "Labels", "Status", "Last heartbeat", "CPU", "Memory", "Functions"],
      nodes.map((n) => [
        code(n.id),
        n.pop_id,
        Object.entries(n.labels ?? {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`)),
        badge(n.status),
        h("span", { title: when(n.last_heartbeat) }, ago(n.last_heartbeat)),
        n.cpu === null ? "–" : n.cpu.toFixed(1) + " %",
        bytes(n.mem_bytes),
        (n.functions ?? []).length,
      ]),
      "No nodes registered.",
    ),
  );
}
