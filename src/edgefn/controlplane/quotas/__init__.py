"""Per-project quotas: set by the admin, read by the project's members, enforced by the edge."""
