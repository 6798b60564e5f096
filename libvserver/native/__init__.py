"""The stock-kernel backend: namespaces, cgroups, pyroute2 and one supervisor process."""

from .backend import NativeBackend

__all__ = ["NativeBackend"]
