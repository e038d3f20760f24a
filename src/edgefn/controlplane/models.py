"""Imports every domain's tables so `Base.metadata` is complete (Alembic, tests)."""

from edgefn.controlplane.audit.models import AuditLog
from edgefn.controlplane.auth.models import ApiKey, Membership, Project, User
from edgefn.controlplane.builds.models import Build
from edgefn.controlplane.db import Base
from edgefn.controlplane.deployments.models import Deployment, DeploymentNode, OutboxInstruction
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.gitlinks.models import GitDelivery, GitLink
from edgefn.controlplane.leases.models import Lease
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.pki.models import NodeCertificate
from edgefn.controlplane.precompiled.models import PrecompiledArtifact
from edgefn.controlplane.quotas.models import ProjectQuota
from edgefn.controlplane.routes.models import Route
from edgefn.controlplane.secrets.models import Secret
from edgefn.controlplane.series.models import VersionSample

__all__ = [
    "ApiKey",
    "AuditLog",
    "Base",
    "Build",
    "Deployment",
    "DeploymentNode",
    "Function",
    "FunctionVersion",
    "GitDelivery",
    "GitLink",
    "Lease",
    "Membership",
    "Node",
    "NodeCertificate",
    "OutboxInstruction",
    "PrecompiledArtifact",
    "Project",
    "ProjectQuota",
    "Route",
    "Secret",
    "User",
    "VersionSample",
]
