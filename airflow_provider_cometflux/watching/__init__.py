"""Watching predictions by id: the shared poller (:mod:`.poller`) and its events (:mod:`.watch`).

The triggers and the worker's inline wait both run this package; it never creates anything.
"""
