"""Protocol adapters behind one interface (``base.Adapter``); a new protocol is one new module.

Importing this package registers every adapter for its URL schemes.
"""

from __future__ import annotations

from ..config import SourceConfig
from ..core.paths import PathFilter
from ..credentials import Credentials
from . import ftp, local, sftp
from .base import Adapter, Verification, adapter_factory, verify_version

__all__ = ["Adapter", "Verification", "adapter_for", "ftp", "local", "sftp", "verify_version"]


def adapter_for(config: SourceConfig, credentials: Credentials, path_filter: PathFilter) -> Adapter:
    """Instantiate the adapter for the config's URL scheme."""
    return adapter_factory(config.parsed_url.scheme)(config, credentials, path_filter)
