// Audit: the log, newest first, a page at a time.

import { call } from "./api.js";
import { code, h, replace, shortId, table, when } from "./dom.js";

const PAGE = 50;

export async function render(main, [offsetText], screen) {
  const offset = Math.max(0, Number.parseInt(offsetText ?? "0", 10) || 0);
  const { body: rows, total } = await call("GET", `/audit?limit=${PAGE}&offset=${offset}`);
  if (!screen.alive()) return;
  const pager = h("div", { class: "toolbar" },
    offset > 0 ? h("a", { href: `#audit/${Math.max(0, offset - PAGE)}` }, "Newer") : null,
    total !== null
      ? h("span", { class: "muted" }, `${Math.min(offset + 1, total)}–${offset + rows.length} of ${total}`)
      : null,
    total !== null && offset + PAGE < total ? h("a", { href: `#audit/${offset + PAGE}` }, "Older") : null,
  );
  replace(
    main,
    h("h2", {}, "Audit log"),
    pager,
    table(
      "Every change, newest first",
      ["At", "Actor", "Action", "Target", "Project", "Request", "Details"],
      rows.map((r) => [
        h("span", { class: "nowrap" }, when(r.at)),
        r.actor,
        code(r.action),
        [r.target_type, " ", r.target_id ? shortId(r.target_id) : null],
        r.project_id ? shortId(r.project_id) : "–",
        r.request_id ? shortId(r.request_id) : "–",
        details(r.details),
      ]),
      "Nothing recorded yet.",
    ),
  );
}

function details(value) {
  const text = JSON.stringify(value);
  if (text.length <= 60) return h("code", { class: "details" }, text);
  return h("details", {},
    h("summary", {}, h("code", {}, text.slice(0, 57) + "…")),
    h("pre", { class: "details" }, JSON.stringify(value, null, 2)));
}
