"""ftpsource: a file-arrival event source for Argo Events (FTP, FTPS, SFTP and local directories)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
