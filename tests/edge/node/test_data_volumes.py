"""A deploy's data archive on the node: downloaded, verified, unpacked once under its
digest and mounted; a tampered or hostile one refused with the node unchanged; never
a directory the instruction names."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgefn.edge.cache import DATA_DIR, ArtifactCache
from edgefn.edge.node.controller import Instruction, NodeController
from edgefn.edge.spec import read_state
from edgefn.sandbox import Engine
from tests.builder.sources import tgz
from tests.conftest import wasm_path
from tests.edge.conftest import ArtifactServer
from tests.test_data_archive import HOSTILE

VOLUME = wasm_path("wagi_volume").read_bytes()
SITE = tgz({"files/greeting.txt": b"greetings from a volume\n", "other/x.txt": b"x"})
OTHER = tgz({"files/greeting.txt": b"other greetings\n"})
TAMPERED = SITE[:-40] + bytes(b ^ 0xFF for b in SITE[-40:])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(artifact_server: ArtifactServer) -> ArtifactServer:
    artifact_server.blobs.update({
        "/volume.wasm": VOLUME, "/site.tar.gz": SITE, "/other.tar.gz": OTHER,
        "/tampered.tar.gz": TAMPERED,
        **{f"/{name}.tar.gz": data for name, data in HOSTILE.items()},
    })
    return artifact_server


@pytest.fixture
def controller(tmp_path: Path, engine: Engine) -> NodeController:
    return NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), engine)


def deploy(i: int, store: ArtifactServer, version: str, archive: str, digest: str,
           **extra: Any) -> Instruction:
    return Instruction.from_json(deploy_json(i, store, version, archive, digest) | extra)


def deploy_json(i: int, store: ArtifactServer, version: str, archive: str,
                digest: str) -> dict[str, Any]:
    return {
        "id": i, "type": "deploy", "function_id": "site", "version": version,
        "artifact_url": f"{store.url}/volume.wasm", "sha256": sha(VOLUME), "abi": "wagi",
        "entrypoint": "_start",
        "routes": [{"id": "r1", "host": "*", "path": "/site", "methods": [], "priority": 0}],
        "data": {"url": f"{store.url}/{archive}.tar.gz", "sha256": digest, "size": 1,
                 "mounts": {"/data": "files"}},
    }


def data_dirs(controller: NodeController) -> list[str]:
    where = controller.cache.root / DATA_DIR
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def test_the_archive_is_unpacked_once_and_mounted(
    controller: NodeController, store: ArtifactServer,
) -> None:
    ack = controller.apply(deploy(1, store, "1.0.0", "site", sha(SITE)))
    assert ack.state == "cached", ack.message
    (spec,) = read_state(controller.state_path).functions
    unpacked = controller.cache.data_path(sha(SITE))
    assert spec.volumes == {"/data": str(unpacked / "files")}
    assert (unpacked / "files" / "greeting.txt").read_bytes() == b"greetings from a volume\n"
    assert spec.data is not None and spec.data.sha256 == sha(SITE)
    # Another version with the same files mounts the same copy: nothing is fetched
    # (the store no longer has it), nothing unpacked again.
    del store.blobs["/site.tar.gz"]
    ack = controller.apply(deploy(2, store, "1.1.0", "site", sha(SITE)))
    assert ack.state == "cached", ack.message
    assert read_state(controller.state_path).functions[0].volumes == spec.volumes
    # And so does a node restarted on the same disk.
    again = NodeController(controller.state_path, controller.cache, controller.engine)
    assert again.apply(deploy(3, store, "1.2.0", "site", sha(SITE))).state == "cached"
    assert data_dirs(controller) == [sha(SITE), f"{sha(SITE)}.bytes"]


def test_a_tampered_archive_is_refused_and_the_node_keeps_what_it_had(
    controller: NodeController, store: ArtifactServer,
) -> None:
    assert controller.apply(deploy(1, store, "1.0.0", "site", sha(SITE))).state == "cached"
    before = read_state(controller.state_path)
    ack = controller.apply(deploy(2, store, "2.0.0", "tampered", sha(SITE[:-1] + b"!")))
    assert ack.state == "error"
    assert "sha256 mismatch for data archive of site@2.0.0" in ack.message
    assert read_state(controller.state_path) == before
    assert controller.statuses() == [{"id": "site", "version": "2.0.0", "state": "error"}]
    assert data_dirs(controller) == [sha(SITE), f"{sha(SITE)}.bytes"]


@pytest.mark.parametrize("name", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_a_hostile_archive_is_refused_and_nothing_is_left(
    controller: NodeController, store: ArtifactServer, tmp_path: Path, name: str,
) -> None:
    ack = controller.apply(deploy(1, store, "1.0.0", name, sha(HOSTILE[name])))
    assert ack.state == "error" and "refused" in ack.message, ack.message
    assert not controller.state_path.exists() or not read_state(controller.state_path).functions
    assert data_dirs(controller) == []  # the half-unpacked copy is gone too
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_an_instruction_cannot_mount_a_directory_of_the_node(
    controller: NodeController, store: ArtifactServer, tmp_path: Path,
) -> None:
    """`volumes` and `config_dir` are not fields of a deploy: sent anyway, they are
    dropped; only the node's own copy of the archive is mounted."""
    secret = tmp_path / "node-secrets"
    secret.mkdir()
    instr = deploy(1, store, "1.0.0", "site", sha(SITE),
                   volumes={"/etc": str(secret)}, config_dir=str(secret))
    assert controller.apply(instr).state == "cached"
    (spec,) = read_state(controller.state_path).functions
    assert spec.config_dir is None
    assert list(spec.volumes) == ["/data"]
    assert Path(spec.volumes["/data"]).is_relative_to(controller.cache.root / DATA_DIR)
    # A mount map naming a path outside the archive does not even read as a deploy.
    raw = deploy_json(2, store, "1.0.0", "site", sha(SITE))
    raw["data"]["mounts"] = {"/data": str(secret)}
    with pytest.raises(ValueError, match="absolute"):
        Instruction.from_json(raw)


def test_an_archive_over_the_nodes_limit_is_not_downloaded(
    tmp_path: Path, engine: Engine, store: ArtifactServer,
) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_data_bytes=len(SITE) - 1)
    controller = NodeController(tmp_path / "state.json", cache, engine)
    instr = deploy(1, store, "1.0.0", "site", sha(SITE))
    instr = instr.model_copy(update={"data": instr.data.model_copy(update={"size": len(SITE)})
                                     if instr.data else None})
    ack = controller.apply(instr)
    assert ack.state == "error" and "over this node's limit" in ack.message
    # A size understated by the instruction is caught while the bytes stream.
    ack = controller.apply(deploy(2, store, "1.0.0", "site", sha(SITE)))
    assert ack.state == "error" and "larger than" in ack.message
    assert data_dirs(controller) == []


def test_unused_archives_go_by_the_caches_eviction(
    tmp_path: Path, engine: Engine, store: ArtifactServer,
) -> None:
    """Counted among the cache's entries, an archive no version mounts any more goes
    when the cache is over its limits; the one in use, and the previous version's,
    stay (a rollback needs no download)."""
    archives = [tgz({"files/greeting.txt": f"v{i}\n".encode()}) for i in range(4)]
    for i, data in enumerate(archives):
        store.blobs[f"/a{i}.tar.gz"] = data
    cache = ArtifactCache(tmp_path / "cache", max_files=2)
    controller = NodeController(tmp_path / "state.json", cache, engine)
    for i, data in enumerate(archives):
        ack = controller.apply(deploy(i + 1, store, f"{i + 1}.0.0", f"a{i}", sha(data)))
        assert ack.state == "cached", ack.message
    present = set(data_dirs(controller))
    assert sha(archives[0]) not in present
    assert {sha(a) for a in archives[1:]} <= present
    (spec,) = read_state(controller.state_path).functions
    assert Path(spec.volumes["/data"], "greeting.txt").read_text() == "v3\n"
    assert not [p for p in cache.root.rglob("*") if p.name.startswith(".part-")]


def test_a_vanished_copy_comes_back_through_a_fresh_url(
    controller: NodeController, store: ArtifactServer,
) -> None:
    assert controller.apply(deploy(1, store, "1.0.0", "site", sha(SITE))).state == "cached"
    generation = read_state(controller.state_path).generation
    unpacked = controller.cache.data_path(sha(SITE))
    shutil.rmtree(unpacked)
    # The URL the deploy came with is dead by now; the control plane signs a new one.
    del store.blobs["/site.tar.gz"]
    store.blobs["/fresh/site.tar.gz"] = SITE
    asked: list[tuple[str, str]] = []

    def fresh(function_id: str, version: str) -> str:
        asked.append((function_id, version))
        return f"{store.url}/fresh/site.tar.gz"

    controller.fresh_data_url = fresh
    assert controller.repair() == ["site@1.0.0"]
    assert asked == [("site", "1.0.0")]
    assert (unpacked / "files" / "greeting.txt").read_bytes() == b"greetings from a volume\n"
    assert read_state(controller.state_path).generation == generation + 1
    assert controller.repair() == []  # whole again: nothing to do
