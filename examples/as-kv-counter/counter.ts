// as-kv-counter: counts its requests in the function's KV store and answers with the
// new count.
import { NOT_FOUND, Request, Response, kvGet, kvPut, serve, text, utf8 } from "../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../sdk/assemblyscript/assembly/index";

serve((req: Request): Response => {
  const got = kvGet("count");
  let count: i64 = 0;
  const value = got.value;
  if (value !== null) count = I64.parseInt(text(value));
  else if (got.code != NOT_FOUND) return Response.text("kv unavailable\n").withStatus(503);
  const next = (count + 1).toString();
  if (kvPut("count", utf8(next)) != 0) return Response.text("kv unavailable\n").withStatus(503);
  return new Response(200).header("content-type", "text/plain").withText("count: " + next + "\n");
});
