"""Who is calling: projects, users and memberships, API keys, tokens, RBAC."""
