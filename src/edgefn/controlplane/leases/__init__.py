"""Leases: work that must happen once across control-plane replicas sharing a
database (marking silent nodes offline, and whatever periodic duty joins it) runs
only on the replica holding the lease, and moves when that replica dies.

`service.hold` takes or renews a lease in the caller's transaction; `duties.Duties`
runs the periodic jobs under one.
"""
