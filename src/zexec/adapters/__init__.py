"""Adapters: implementations of the ports in :mod:`zexec.core.ports`."""
