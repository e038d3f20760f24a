"""Identities and credentials: projects, users, memberships, API keys, passwords,
JWTs, and turning a bearer token into a `Principal`."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.models import ApiKey, Membership, Project, User
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.errors import Conflict, Forbidden, NotFound, Unauthorized
from edgefn.controlplane.nodes.models import Node

API_KEY_PREFIX = "efk_"
NODE_TOKEN_PREFIX = "efn_"
_JWT_ALG = "HS256"


def token_digest(token: str) -> str:
    """API keys and node tokens carry 256 random bits, so a plain sha256 is a safe
    way to keep them (argon2 would cost a hash per request for no gain)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credentials:
    """What authentication needs from the app: the admin token, the JWT key, the hasher."""

    bootstrap_token: str | None
    jwt_secret: str
    jwt_ttl_s: int
    hasher: PasswordHasher


# ---- tokens -> principals -------------------------------------------------------


def issue_jwt(creds: Credentials, user_id: str, projects: list[str]) -> tuple[str, dt.datetime]:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=creds.jwt_ttl_s)
    claims = {"sub": user_id, "projects": projects, "exp": exp, "iat": dt.datetime.now(dt.UTC)}
    return jwt.encode(claims, creds.jwt_secret, algorithm=_JWT_ALG), exp


def _roles_of_user(session: Session, user_id: str) -> dict[str, str]:
    rows = session.execute(
        select(Membership.project_id, Membership.role).where(Membership.user_id == user_id)
    )
    return {project_id: role for project_id, role in rows}


def authenticate(
    session: Session, creds: Credentials, token: str | None, *, request_id: str | None
) -> Principal:
    """Map a bearer token to who it stands for; Unauthorized when it stands for nobody."""
    if not token:
        raise Unauthorized("missing bearer token")
    if creds.bootstrap_token and hmac.compare_digest(
        token.encode(), creds.bootstrap_token.encode()
    ):
        return Principal("admin", "bootstrap", request_id=request_id)
    if token.startswith(API_KEY_PREFIX):
        key = session.scalar(select(ApiKey).where(ApiKey.key_hash == token_digest(token)))
        if key is None:
            raise Unauthorized("unknown API key")
        return Principal("api_key", key.id, {key.project_id: key.role}, request_id)
    if token.startswith(NODE_TOKEN_PREFIX):
        node = session.scalar(select(Node).where(Node.token_hash == token_digest(token)))
        if node is None:
            raise Unauthorized("unknown node token")
        return Principal("node", node.id, request_id=request_id)
    try:
        claims = jwt.decode(
            token, creds.jwt_secret, algorithms=[_JWT_ALG], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("invalid token") from exc
    user_id = str(claims["sub"])
    if session.get(User, user_id) is None:
        raise Unauthorized("token of an unknown user")
    # Roles come from the database, not the token, so removing a member takes
    # effect before the token expires.
    return Principal("user", user_id, _roles_of_user(session, user_id), request_id)


def require_project_role(who: Principal, project_id: str, minimum: str) -> None:
    if not who.has_role(project_id, minimum):
        raise Forbidden(f"needs role {minimum} in project {project_id}")


def require_admin(who: Principal) -> None:
    if not who.is_admin:
        raise Forbidden("needs the admin token")


# ---- login -------------------------------------------------------------------------

# Verified against when the email is unknown, so both failures take as long.
_DUMMY_PASSWORD = "edgefn-dummy-password"


def login(
    session: Session, creds: Credentials, *, email: str, password: str, request_id: str | None
) -> tuple[str, dt.datetime]:
    user = session.scalar(select(User).where(User.email == email.lower()))
    stored = user.password_hash if user else creds.hasher.hash(_DUMMY_PASSWORD)
    try:
        creds.hasher.verify(stored, password)
        ok = user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        anonymous = Principal("anonymous", email.lower()[:150], request_id=request_id)
        audit.record(
            session, anonymous, "auth.login_failed", target_type="user", target_id=email.lower()
        )
        # The failed attempt is evidence even though the request fails.
        session.commit()
        raise Unauthorized("wrong email or password")
    if creds.hasher.check_needs_rehash(user.password_hash):
        user.password_hash = creds.hasher.hash(password)
        session.commit()
    return issue_jwt(creds, user.id, sorted(_roles_of_user(session, user.id)))


# ---- projects, users, members, keys ---------------------------------------------


def _commit_or_conflict(session: Session, message: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(message) from exc


def create_project(session: Session, who: Principal, *, name: str) -> Project:
    require_admin(who)
    if session.scalar(select(Project).where(Project.name == name)):
        raise Conflict(f"project {name!r} exists")
    project = Project(name=name)
    session.add(project)
    session.flush()
    audit.record(
        session,
        who,
        "project.create",
        target_type="project",
        target_id=project.id,
        project_id=project.id,
        details={"name": name},
    )
    _commit_or_conflict(session, f"project {name!r} exists")
    return project


def list_projects(session: Session, who: Principal) -> list[Project]:
    query = select(Project).order_by(Project.created_at, Project.id)
    visible = who.visible_projects()
    if visible is not None:
        query = query.where(Project.id.in_(visible))
    return list(session.scalars(query))


def get_project(session: Session, who: Principal, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None or who.role_in(project_id) is None:
        raise NotFound(f"no project {project_id}")
    return project


def create_user(
    session: Session, who: Principal, creds: Credentials, *, email: str, password: str
) -> User:
    require_admin(who)
    email = email.lower()
    if session.scalar(select(User).where(User.email == email)):
        raise Conflict(f"user {email!r} exists")
    user = User(email=email, password_hash=creds.hasher.hash(password))
    session.add(user)
    session.flush()
    audit.record(
        session,
        who,
        "user.create",
        target_type="user",
        target_id=user.id,
        details={"email": email},
    )
    _commit_or_conflict(session, f"user {email!r} exists")
    return user


def add_member(
    session: Session, who: Principal, *, project_id: str, user_id: str, role: str
) -> Membership:
    get_project(session, who, project_id)
    require_project_role(who, project_id, "owner")
    if session.get(User, user_id) is None:
        raise NotFound(f"no user {user_id}")
    member = session.get(Membership, (user_id, project_id))
    action = "member.update" if member else "member.create"
    if member is None:
        member = Membership(user_id=user_id, project_id=project_id, role=role)
        session.add(member)
    else:
        member.role = role
    session.flush()
    audit.record(
        session,
        who,
        action,
        target_type="membership",
        target_id=f"{project_id}/{user_id}",
        project_id=project_id,
        details={"role": role},
    )
    session.commit()
    return member


def create_api_key(
    session: Session, who: Principal, *, project_id: str, name: str, role: str
) -> tuple[ApiKey, str]:
    """Returns the key row and the secret, which is not kept and cannot be shown again."""
    get_project(session, who, project_id)
    require_project_role(who, project_id, "owner")
    secret = new_secret_token(API_KEY_PREFIX)
    key = ApiKey(project_id=project_id, name=name, role=role, key_hash=token_digest(secret))
    session.add(key)
    session.flush()
    audit.record(
        session,
        who,
        "api_key.create",
        target_type="api_key",
        target_id=key.id,
        project_id=project_id,
        details={"name": name, "role": role},
    )
    session.commit()
    return key, secret


def list_api_keys(session: Session, who: Principal, *, project_id: str) -> list[ApiKey]:
    """The project's keys (never their secrets), oldest first; owners only."""
    get_project(session, who, project_id)
    require_project_role(who, project_id, "owner")
    return list(session.scalars(
        select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)
    ))


def revoke_api_key(session: Session, who: Principal, *, project_id: str, key_id: str) -> None:
    """Delete the key: from now on it authenticates nobody. Owners only."""
    get_project(session, who, project_id)
    require_project_role(who, project_id, "owner")
    key = session.get(ApiKey, key_id)
    if key is None or key.project_id != project_id:
        raise NotFound(f"no API key {key_id} in this project")
    name = key.name
    session.delete(key)
    audit.record(
        session,
        who,
        "api_key.revoke",
        target_type="api_key",
        target_id=key_id,
        project_id=project_id,
        details={"name": name},
    )
    session.commit()
