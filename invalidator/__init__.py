"""pg-cache-invalidator: turns committed PostgreSQL changes into memcached invalidations."""

__version__ = "0.1.0"
__all__ = ["__version__"]
