"""Fail when src/edgefn/proto/_generated differs from a fresh generation."""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_proto import PROTO_DIR, generate


def main() -> int:
    committed = PROTO_DIR / "_generated"
    with tempfile.TemporaryDirectory() as d:
        fresh = Path(d)
        generate(fresh)
        names = sorted(p.name for p in fresh.iterdir() if p.is_file())
        bad = [n for n in names if not (committed / n).exists()
               or not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    if bad:
        print("generated protobuf code is stale; run python scripts/gen_proto.py:", *bad)
        return 1
    print(f"generated protobuf code is current ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
