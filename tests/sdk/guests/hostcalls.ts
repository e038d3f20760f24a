// hostcalls (AssemblyScript SDK): one path per `edge` host function; a value is the
// body, no value is "error CODE".
//   /log  /metric  /id  /header?name=N  /secret?name=N  /env?name=N  /kv?key=K
//   /big?n=N (a body of N bytes)
import {
  LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_NOTICE, LOG_WARN, Request, Response, Result, envGet,
  kvGet, log, metricsIncrement, requestHeader, requestId, secretGet, serve, text,
} from "../../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../../sdk/assemblyscript/assembly/index";

function answer(got: Result<string>): Response {
  const v = got.value;
  return Response.text(v === null ? "error " + got.code.toString() : v);
}

serve((req: Request): Response => {
  const asked = req.query("name");
  const name = asked === null ? "" : asked;
  const path = req.path();
  if (path == "/log") {
    log(LOG_DEBUG, "debug line");
    log(LOG_INFO, "info line");
    log(LOG_NOTICE, "notice line");
    log(LOG_WARN, "warn line");
    log(LOG_ERROR, "error line");
    return Response.text("logged");
  }
  if (path == "/metric") {
    metricsIncrement("hits", 1.5, ["route=a"]);
    return Response.text("counted");
  }
  if (path == "/id") return answer(requestId());
  if (path == "/header") return answer(requestHeader(name));
  if (path == "/secret") return answer(secretGet(name));
  if (path == "/env") return answer(envGet(name));
  if (path == "/kv") {
    const key = req.query("key");
    const got = kvGet(key === null ? "" : key);
    const v = got.value;
    return Response.text(v === null ? "error " + got.code.toString() : text(v));
  }
  if (path == "/big") {
    const n = req.query("n");
    return new Response(200).withBody(new Uint8Array(n === null ? 0 : I32.parseInt(n)));
  }
  return Response.text("unknown host call\n").withStatus(404);
});
