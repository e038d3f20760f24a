// An edgefn function in AssemblyScript: GET /?name=Ada answers "Hello, Ada!".
// Build with ./build.sh, check with `edgefn test .`; sdk/edgefn is the whole SDK.
import { Request, Response, serve } from "../sdk/edgefn/index";
export { alloc, dealloc, handle } from "../sdk/edgefn/index";

serve((req: Request): Response => {
  const asked = req.query("name");
  const name = asked === null || asked.length == 0 ? "world" : asked;
  return Response.text("Hello, " + name + "!\n");
});
