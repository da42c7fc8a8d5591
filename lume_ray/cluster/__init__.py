"""Cluster: Ray Jobs submission, status and logs; the ZeRO memory planner."""
