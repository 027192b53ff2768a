"""iptraf-mp: IPTraf's IP traffic monitor for multi-interface routers on many cores."""

__version__ = "0.1.0"


class StaleBuild(ImportError):
    """A compiled core module was built from other source than the one beside it."""
