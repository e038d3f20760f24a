// as-fetch: fetches UPSTREAM_URL (a declared variable; the host must be in
// http_fetch.allow_hosts) and reports its status and body.
import { FetchRequest, Request, Response, envGet, httpFetch, serve } from "../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../sdk/assemblyscript/assembly/index";

serve((req: Request): Response => {
  const url = envGet("UPSTREAM_URL").value;
  if (url === null) return Response.text("UPSTREAM_URL is not set\n").withStatus(502);
  const got = httpFetch(FetchRequest.get(url));
  const upstream = got.value;
  if (upstream === null) {
    return Response.text("fetch failed: " + got.code.toString() + "\n").withStatus(502);
  }
  return new Response(200)
    .header("content-type", "text/plain")
    .withText("upstream answered " + upstream.status.toString() + ": " + upstream.bodyText());
});
