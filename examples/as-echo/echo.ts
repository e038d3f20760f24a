// as-echo: answers with the request's body and content type, and its method in x-method.
import { Request, Response, serve } from "../../sdk/assemblyscript/assembly/index";
export { alloc, dealloc, handle } from "../../sdk/assemblyscript/assembly/index";

serve((req: Request): Response => {
  const type = req.header("content-type");
  return new Response(200)
    .header("content-type", type === null ? "application/octet-stream" : type)
    .header("x-method", req.method)
    .withBody(req.body);
});
