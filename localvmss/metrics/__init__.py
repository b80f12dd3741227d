"""Metrics: the daemon's Prometheus exporter, a private Prometheus server and its client.

Submodules: ``exporter`` (collectors, daemon metrics, HTTP exporter), ``prometheus`` (HTTP API
client, child-process server), ``file_sd`` (service discovery file for guest endpoints). Nothing is
imported here so that importing one piece does not pull in the others.
"""
