"""Python client for Quiver, the GPU-accelerated vector search service."""
from .client import Client, QuiverError

__all__ = ["Client", "QuiverError"]
