"""The control plane: registry of functions and versions, artifact store, routes,
nodes, deployments and their per-node instructions, auth, and the audit log.

The app is built by `edgefn.controlplane.app.create_app`, configured by
`edgefn.controlplane.settings.CPSettings`.
"""
