;; An edgefn function in WebAssembly text: every request gets "Hello, world!".
;; Build with ./build.sh, check with `edgefn test .`. The edge-v1 ABI by hand:
;; export memory, alloc and handle; handle writes the response and returns its length.
(module
  (memory (export "memory") 2)
  ;; The response, in the edge-v1 encoding: status line, headers, blank line, body.
  (data (i32.const 16) "200\ncontent-type: text/plain; charset=utf-8\n\nHello, world!\n")
  ;; A bump allocator above the response; handle empties it, since every buffer the
  ;; host takes lives only for one request.
  (global $base i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $pages i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func (export "handle")
    (param $method i32) (param $method_len i32) (param $path i32) (param $path_len i32)
    (param $headers i32) (param $headers_len i32) (param $body i32) (param $body_len i32)
    (param $out i32) (param $cap i32) (result i32)
    (memory.copy (local.get $out) (i32.const 16)
      (select (i32.const 59) (local.get $cap) (i32.le_u (i32.const 59) (local.get $cap))))
    (global.set $heap (global.get $base))
    (i32.const 59)))
