"""Operator tools for a running mesh: ``meshctl`` (:mod:`mesh.tools.meshctl`)."""
