"""Host capabilities behind the `edge` imports, one small module each.

Every capability has the same shape: `configure(spec, ...)` builds the
function's policy once per function version and returns None when the function
may not use it (deny by default, the host then answers -2); its per-call methods
take and return bytes, or a negative host-function code (`edgefn.sandbox.hostcodes`),
and never raise into a guest. A capability that holds resources (the pooled
client of `http_fetch`) has `close()`; stores it is handed (the node's KV
store) stay the node's to close.
"""
