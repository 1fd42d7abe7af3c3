"""ftpsource: a file-arrival event source for Argo Events (FTP, FTPS, SFTP and local directories)."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("ftpsource")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
