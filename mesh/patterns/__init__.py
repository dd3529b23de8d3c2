"""Patterns built on the node runtime: pub/sub, mediator, supervisors, sharding, autoscaling."""
