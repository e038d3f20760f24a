"""Login timing: how long a failed `POST /auth/login` takes for an email that
exists and for one that does not (a gap tells an attacker which emails exist),
interleaved, on a SQLite control plane with the default argon2id parameters.

    python bench/login_timing.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from edgefn.controlplane.app import create_app
from edgefn.controlplane.settings import CPSettings

ADMIN = {"Authorization": "Bearer bench-admin-token"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = CPSettings(
            data_dir=Path(tmp),
            bootstrap_token="bench-admin-token",
            grpc_port=None,
            # Throttling would answer 429 without hashing; this measures the hashing.
            login_max_failures_account=10**6,
            login_max_failures_address=10**6,
        )
        with TestClient(create_app(settings)) as client:
            client.post(
                "/api/v1/users",
                headers=ADMIN,
                json={"email": "known@example.com", "password": "a long password"},
            ).raise_for_status()
            times: dict[str, list[float]] = {"known": [], "unknown": []}
            for i in range(args.rounds):
                for kind in ("known", "unknown"):
                    email = "known@example.com" if kind == "known" else f"nobody{i}@example.com"
                    start = time.perf_counter()
                    r = client.post(
                        "/api/v1/auth/login", json={"email": email, "password": "wrong"}
                    )
                    times[kind].append(time.perf_counter() - start)
                    assert r.status_code == 401, r.text
    known, unknown = (statistics.median(times[k]) * 1000 for k in ("known", "unknown"))
    print(f"failed login, median of {args.rounds}: known email {known:.1f} ms, "
          f"unknown email {unknown:.1f} ms, unknown/known {unknown / known:.2f}")


if __name__ == "__main__":
    main()
