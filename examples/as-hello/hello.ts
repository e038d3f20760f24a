// as-hello: an edge-v1 function in AssemblyScript.
import { LOG_INFO, Request, Response, log, serve } from "../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../sdk/assemblyscript/assembly/index";

serve((req: Request): Response => {
  log(LOG_INFO, "as-hello served " + req.path());
  return Response.text("Hello from edgefn in AssemblyScript!\n");
});
