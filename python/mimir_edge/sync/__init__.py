"""``mimir-edge overrides-sync``: Mimir's runtime config → the limit set of every RLS replica.

A :class:`~mimir_edge.sync.base.Source` (a mounted file or directory, or the Kubernetes
API) emits snapshots of the overrides; the :class:`~mimir_edge.sync.controller.Controller`
parses them, keeps the last good set, and pushes it whole to every replica a
:class:`~mimir_edge.sync.base.TargetSource` lists, through the RLS admin API.
"""
