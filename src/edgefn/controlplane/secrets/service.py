"""Secret rules: who may write and list a project's secrets, and which node may read
which values.

Roles: a project's developers and owners set and delete secrets; viewers list
their names. Nobody reads a value back through the API: only a node, with its
own token, for a function deployed to it, and only the names that function
lists. Every change and every node read is audited, by name, never by value.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import get_project, require_project_role
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.errors import Forbidden, NotFound, SecretStoreError
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.secrets.base import SecretStore
from edgefn.controlplane.secrets.models import Secret
from edgefn.controlplane.secrets.schemas import NodeSecretsOut, SecretIn

log = logging.getLogger(__name__)


def _row(session: Session, project_id: str, name: str) -> Secret | None:
    return session.scalar(
        select(Secret).where(Secret.project_id == project_id, Secret.name == name)
    )


def put_secret(
    session: Session, who: Principal, store: SecretStore, project_id: str, body: SecretIn
) -> tuple[Secret, bool]:
    """Create the secret, or replace its value (rotation); True when it is new."""
    get_project(session, who, project_id)
    require_project_role(who, project_id, "developer")
    sealed = store.seal(project_id, body.name, body.value.get_secret_value())
    row = _row(session, project_id, body.name)
    created = row is None
    if row is None:
        row = Secret(project_id=project_id, name=body.name)
        session.add(row)
    row.backend = store.name
    row.sealed = sealed
    row.updated_at = utcnow()
    row.updated_by = who.actor
    audit.record(
        session, who, "secret.create" if created else "secret.update",
        target_type="secret", target_id=f"{project_id}/{body.name}", project_id=project_id,
        details={"name": body.name},
    )
    session.commit()
    return row, created


def list_secrets(session: Session, who: Principal, project_id: str) -> list[Secret]:
    get_project(session, who, project_id)
    require_project_role(who, project_id, "viewer")
    return list(session.scalars(
        select(Secret).where(Secret.project_id == project_id).order_by(Secret.name)
    ))


def delete_secret(
    session: Session, who: Principal, store: SecretStore, project_id: str, name: str
) -> None:
    get_project(session, who, project_id)
    require_project_role(who, project_id, "developer")
    row = _row(session, project_id, name)
    if row is None:
        raise NotFound(f"no secret {name} in project {project_id}")
    backend = row.backend
    session.delete(row)
    audit.record(
        session, who, "secret.delete", target_type="secret",
        target_id=f"{project_id}/{name}", project_id=project_id, details={"name": name},
    )
    session.commit()
    if backend == store.name:
        try:
            store.remove(project_id, name)
        except SecretStoreError as exc:
            # The row is gone, so nothing reads the value again; the store keeps an orphan.
            log.warning("secret %s/%s deleted, but its value stays in the store: %s",
                        project_id, name, exc.message)


def resolve_for_node(
    session: Session,
    who: Principal,
    store: SecretStore,
    node_id: str,
    function_id: str,
    names: list[str],
) -> NodeSecretsOut:
    """The values a node may have: only its own call, only for a function deployed to
    it (as the outbox records), only the names the function lists now."""
    if who.kind != "node":
        raise Forbidden("only a node's own token resolves secrets")
    if who.id != node_id:
        raise Forbidden("a node resolves secrets for itself only")
    fn = session.get(Function, function_id)
    if fn is None or function_id not in outbox.deployed_functions(session, node_id):
        raise NotFound(f"function {function_id} is not deployed to node {node_id}")
    listed = set(fn.function_policy().secrets)
    wanted = sorted(set(names))
    allowed = [n for n in wanted if n in listed]
    rows = {
        r.name: r for r in session.scalars(
            select(Secret).where(Secret.project_id == fn.project_id, Secret.name.in_(allowed))
        )
    } if allowed else {}
    values: dict[str, str] = {}
    for name, row in rows.items():
        if row.backend != store.name:
            raise SecretStoreError(
                f"secret {name} is kept by the {row.backend} store, this control plane "
                f"uses {store.name}"
            )
        values[name] = store.unseal(fn.project_id, name, row.sealed)
    audit.record(
        session, who, "secret.resolve", target_type="function", target_id=fn.id,
        project_id=fn.project_id, details={"node_id": node_id, "names": sorted(values)},
    )
    session.commit()
    return NodeSecretsOut(
        secrets=values,
        missing=[n for n in allowed if n not in values],
        denied=[n for n in wanted if n not in listed],
    )
