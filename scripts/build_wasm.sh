#!/usr/bin/env bash
# Rebuilds every test fixture and example module from source, then prints each
# module's size and sha256. Idempotent: the same tools give the same bytes, and
# the committed .wasm files are exactly what this script writes.
#
# Needs clang with the wasm32-wasi target and sysroot (wasi-libc), wasm-ld and
# wat2wasm (wabt). Override the tools with CLANG=... WAT2WASM=...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLANG="${CLANG:-clang}"
WAT2WASM="${WAT2WASM:-wat2wasm}"
FIXTURES="$ROOT/tests/fixtures/wasm"
SRC="$FIXTURES/src"

# --stack-first puts the shadow stack below the data, so an overflow traps at
# address 0 instead of silently overwriting globals; --strip-all drops names and
# custom sections, which keeps modules small and builds reproducible.
CFLAGS=(--target=wasm32-wasi -O2 -Wall -Wextra -Werror -I "$ROOT/sdk/c"
        -Wl,--strip-all -Wl,--stack-first)
REACTOR=(-mexec-model=reactor)

built=()

# build_c OUT SOURCE [extra clang flags...]
build_c() {
    local out="$1" source="$2"
    shift 2
    local tmp="$out.tmp"
    "$CLANG" "${CFLAGS[@]}" "$@" -o "$tmp" "$source"
    mv -f "$tmp" "$out"
    built+=("$out")
}

# build_wat OUT SOURCE
build_wat() {
    local out="$1" source="$2" tmp="$1.tmp"
    "$WAT2WASM" "$source" -o "$tmp"
    mv -f "$tmp" "$out"
    built+=("$out")
}

# edge-v1 fixtures: WASI reactors exporting memory, alloc, dealloc and handle.
for name in echo headers counter negative bigresponse sized hostcalls \
            loop membomb membomb_trap trap recursion \
            passwd listdir config_read socket env_stdout compute secret; do
    build_c "$FIXTURES/$name.wasm" "$SRC/$name.c" "${REACTOR[@]}"
done

# echo with exactly 16 pages (1 MiB) of initial memory, for footprint figures.
build_c "$FIXTURES/echo16.wasm" "$SRC/echo.c" "${REACTOR[@]}" -Wl,--initial-memory=1048576

# WAGI fixtures: WASI commands exporting _start.
for name in wagi_hello wagi_env wagi_stdin wagi_exit wagi_loop wagi_http wagi_volume wagi_routes wagi_cases; do
    build_c "$FIXTURES/$name.wasm" "$SRC/$name.c"
done

# Hand-written modules that a C compiler will not produce.
for name in forbidden_import bad_edge_import nomemory big_initial_memory start_loop \
            recursion_hostcall; do
    build_wat "$FIXTURES/$name.wasm" "$SRC/$name.wat"
done

# Examples.
build_c "$ROOT/examples/hello-c/hello.wasm" "$ROOT/examples/hello-c/hello.c" "${REACTOR[@]}"
build_c "$ROOT/examples/hello-wagi/hello.wasm" "$ROOT/examples/hello-wagi/hello.c"

printf '%-52s %8s  %s\n' module bytes sha256
for f in "${built[@]}"; do
    printf '%-52s %8s  %s\n' "${f#"$ROOT"/}" "$(wc -c <"$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done
