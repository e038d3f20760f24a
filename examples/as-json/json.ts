// as-json: a JSON API. GET /as/json?name=Ada answers {"greeting":"Hello, Ada!","lang":"as"};
// any other method gets 405.
import { Request, Response, serve } from "../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../sdk/assemblyscript/assembly/index";

// `s` as a JSON string literal.
function jsonString(s: string): string {
  let out = "\"";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c == 34) out += "\\\"";
    else if (c == 92) out += "\\\\";
    else if (c < 32) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += s.charAt(i);
  }
  return out + "\"";
}

serve((req: Request): Response => {
  if (req.method != "GET") return Response.json("{\"error\":\"only GET\"}").withStatus(405);
  const asked = req.query("name");
  const name = asked === null || asked.length == 0 ? "world" : asked;
  return Response.json("{\"greeting\":" + jsonString("Hello, " + name + "!") + ",\"lang\":\"as\"}");
});
