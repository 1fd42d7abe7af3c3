"""Real FTP, FTPS and SFTP servers for integration tests, as async context managers.

Each helper starts a server on 127.0.0.1 (port 0 or a free port), serving a fresh temporary directory,
and yields what a test needs to connect: host, port, the local directory (``root``) and the URL that
names it, credentials, CA file or host key fingerprint. Servers start in well under two seconds: the
helpers wait for the port to accept instead of sleeping.

In-process: pyftpdlib (FTP, FTPS with a generated CA) and asyncssh (SFTP, password and key auth).
Subprocesses with their own config in the temp directory: Debian's vsftpd, proftpd (unpacked into
``.cache/proftpd`` by ``tests/tools/unpack-proftpd.sh``) and OpenSSH's sshd. These log in as a local
system user (``ftpsourcetest``) that the helper creates when absent; that needs root. A helper whose
binary is missing skips the test, or fails it when ``FTPSOURCE_REQUIRE_REAL_SERVERS=1`` (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import asyncssh
import pytest

from tests.support import REQUIRE_REAL_SERVERS

__all__ = [
    "REAL_SERVERS_REQUIRED",
    "CountingListener",
    "FtpServer",
    "SftpServer",
    "TlsFiles",
    "asyncssh_server",
    "counting_listener",
    "free_port",
    "hostile_ftp_server",
    "make_tls_files",
    "openssh_server",
    "proftpd_server",
    "pyftpdlib_server",
    "silent_server",
    "unavailable",
    "vsftpd_server",
]

REAL_SERVERS_REQUIRED = REQUIRE_REAL_SERVERS
REPO = Path(__file__).resolve().parents[2]
PROFTPD_DIR = Path(os.environ.get("FTPSOURCE_PROFTPD_DIR", REPO / ".cache" / "proftpd"))
TEST_USER = "ftpsourcetest"
# Shared by every test process on this machine, so concurrent runs do not reset each other's password.
_TEST_USER_PASSWORD_FILE = Path("/run/ftpsourcetest.password")
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when real servers are required (CI)."""
    if REAL_SERVERS_REQUIRED:
        pytest.fail(f"{reason}; FTPSOURCE_REQUIRE_REAL_SERVERS=1 requires it", pytrace=False)
    pytest.skip(reason)


@dataclass
class FtpServer:
    name: str
    host: str
    port: int
    root: Path
    url_path: str
    username: str
    password: str
    tls: bool = False
    ca_file: Path | None = None
    #: what the server implements: "mlsd", "mdtm", "hash" (HASH/XSHA256/XMD5)
    features: frozenset[str] = frozenset()
    #: stops the server early, dropping every connection (in-process servers only)
    stop: Callable[[], Awaitable[None]] | None = None

    def url(self, sub: str = "") -> str:
        scheme = "ftps" if self.tls else "ftp"
        path = self.url_path.rstrip("/") + ("/" + sub.strip("/") if sub.strip("/") else "")
        return f"{scheme}://{quote(self.username, safe='')}@{self.host}:{self.port}{quote(path or '/')}"


@dataclass
class SftpServer:
    name: str
    host: str
    port: int
    root: Path
    url_path: str
    username: str
    password: str
    private_key: str
    known_hosts: Path
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, sub: str = "") -> str:
        path = self.url_path.rstrip("/") + ("/" + sub.strip("/") if sub.strip("/") else "")
        return f"sftp://{quote(self.username, safe='')}@{self.host}:{self.port}{quote(path or '/')}"


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


# --- small utilities --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, proc: asyncio.subprocess.Process | None, log: Path | None) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        if proc is not None and proc.returncode is not None:
            text = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before accepting:\n{text}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"server did not accept on port {port} within {START_TIMEOUT_S}s") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@contextlib.contextmanager
def _tempdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _data_root(base: Path) -> Path:
    # Readable by the unprivileged test user, which the real servers run sessions as.
    base.chmod(0o755)
    root = base / "data"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    return root


@contextlib.asynccontextmanager
async def _subprocess(
    argv: list[str], port: int, log: Path, ready: Callable[[], bool] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        await _wait_for_port(port, proc, log)
        yield proc
    finally:
        if proc.returncode is None:
            # The daemons fork a child per session: signal the whole group this helper started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


def ensure_test_user() -> tuple[str, str]:
    """The local account vsftpd, proftpd and sshd log in as; created (as root) when absent."""
    if os.geteuid() != 0:
        unavailable(f"real FTP/SSH servers need root to create the local user {TEST_USER!r}")
    created = False
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            unavailable("useradd is missing; cannot create the test user")
        subprocess.run(
            [useradd, "--create-home", "--shell", "/bin/bash", "--comment", "ftpsource tests", TEST_USER],
            check=True,
            capture_output=True,
        )
        created = True
    try:
        password = _TEST_USER_PASSWORD_FILE.read_text().strip()
    except FileNotFoundError:
        password = ""
    if not password or created:
        password = "fst-" + secrets.token_urlsafe(16)
        subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True, capture_output=True)
        fd = os.open(_TEST_USER_PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
    return TEST_USER, password


def make_tls_files(directory: Path, hostnames: tuple[str, ...] = ("localhost", HOST)) -> TlsFiles:
    """A private CA and a server certificate it signed for ``hostnames``; ``ca_file`` is the trust anchor."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ftpsource test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.crt", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key_file.chmod(0o600)
    return files


# --- pyftpdlib (in-process, in a thread) -----------------------------------------------------------

#: called in the server thread before a directory is listed: ``hook(fs, absolute_local_path)``.
ListdirHook = Callable[[Any, str], None]


@contextlib.asynccontextmanager
async def pyftpdlib_server(
    *,
    tls: bool = False,
    tls_hostnames: tuple[str, ...] = ("localhost", HOST),
    without: frozenset[str] = frozenset(),
    listdir_hook: ListdirHook | None = None,
    xsha256: Callable[[str], str] | None = None,
) -> AsyncIterator[FtpServer]:
    """pyftpdlib on a port-0 socket. ``tls`` requires explicit TLS on control and data channels;
    ``without`` removes commands, e.g. ``{"MLSD", "MLST"}`` so that clients must fall back to LIST.
    ``xsha256``: announce ``XSHA256`` and answer it with ``xsha256(local path)`` (what a server that
    hashes on its side says, true or not)."""
    with warnings.catch_warnings():
        # pyftpdlib still imports asyncore/asynchat, deprecated since Python 3.10.
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.filesystems import AbstractedFS
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        from pyftpdlib.ioloop import IOLoop
        from pyftpdlib.servers import FTPServer

    with _tempdir("ftpsource-pyftpdlib-") as base:
        root = _data_root(base)
        username, password = "alice", "pyftpd-" + secrets.token_urlsafe(8)
        authorizer = DummyAuthorizer()
        authorizer.add_user(username, password, str(root), perm="elradfmwMT")
        handler_base: type[Any] = TLS_FTPHandler if tls else FTPHandler
        attrs: dict[str, Any] = {"authorizer": authorizer, "auth_failed_timeout": 0.05, "banner": "pyftpdlib test"}
        tls_files = None
        if tls:
            tls_files = make_tls_files(base / "tls", tls_hostnames)
            attrs.update(
                certfile=str(tls_files.cert_file),
                keyfile=str(tls_files.key_file),
                tls_control_required=True,
                tls_data_required=True,
                ssl_context=None,  # the class caches its context; never share one between servers
            )
        if without:
            attrs["proto_cmds"] = {k: v for k, v in handler_base.proto_cmds.items() if k not in without}
        if listdir_hook is not None:
            hook = listdir_hook

            class HookedFS(AbstractedFS):  # type: ignore[misc]
                def listdir(self, path: str) -> Any:
                    hook(self, path)
                    return super().listdir(path)

            attrs["abstracted_fs"] = HookedFS
        if xsha256 is not None:
            hash_of = xsha256
            attrs["proto_cmds"] = {
                **attrs.get("proto_cmds", handler_base.proto_cmds),
                "XSHA256": {"perm": "r", "auth": True, "arg": True, "help": "Syntax: XSHA256 <SP> file-name"},
            }

            def on_connect(self: Any) -> None:
                handler_base.on_connect(self)
                self._extra_feats.append("XSHA256")

            def ftp_xsha256(self: Any, path: str) -> None:
                self.respond(f"250 {hash_of(path)}")

            attrs.update(on_connect=on_connect, ftp_XSHA256=ftp_xsha256)
        handler = type("TestHandler", (handler_base,), attrs)
        ioloop = IOLoop()
        server = FTPServer((HOST, 0), handler, ioloop=ioloop)
        port = int(server.socket.getsockname()[1])
        stop = threading.Event()

        def run() -> None:
            try:
                while not stop.is_set():
                    ioloop.loop(0.02, blocking=False)
            finally:
                server.close_all()

        thread = threading.Thread(target=run, name=f"pyftpdlib-{port}", daemon=True)
        thread.start()

        async def stop_server() -> None:
            stop.set()
            await asyncio.to_thread(thread.join, 10)

        try:
            yield FtpServer(
                name="pyftpdlib" + ("-tls" if tls else "") + "".join(f"-no{c.lower()}" for c in sorted(without)),
                host=HOST,
                port=port,
                root=root,
                url_path="/",
                username=username,
                password=password,
                tls=tls,
                ca_file=tls_files.ca_file if tls_files else None,
                features=frozenset({"mlsd", "mdtm"} - {c.lower() for c in without}),
                stop=stop_server,
            )
        finally:
            await stop_server()


# --- vsftpd and proftpd (subprocesses) -------------------------------------------------------------


@contextlib.asynccontextmanager
async def vsftpd_server(*, tls: bool = False) -> AsyncIterator[FtpServer]:
    """Debian's vsftpd: no MLSD (LIST only), MDTM and SIZE; ``tls`` forces explicit TLS."""
    binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not os.access(binary, os.X_OK):
        unavailable("vsftpd is not installed (apt-get install vsftpd)")
    username, password = ensure_test_user()
    with _tempdir("ftpsource-vsftpd-") as base:
        root = _data_root(base)
        # Real clients (lftp) upload as the test user.
        user = pwd.getpwnam(username)
        os.chown(root, user.pw_uid, user.pw_gid)
        empty = base / "empty"
        empty.mkdir(mode=0o755)
        port = free_port()
        lines = [
            "listen=YES",
            "listen_ipv6=NO",
            f"listen_address={HOST}",
            f"listen_port={port}",
            "background=NO",
            "anonymous_enable=NO",
            "local_enable=YES",
            "write_enable=YES",
            "local_umask=022",
            "chroot_local_user=NO",
            "pam_service_name=vsftpd",
            "userlist_enable=NO",
            "seccomp_sandbox=NO",
            "isolate=NO",
            "isolate_network=NO",
            "pasv_enable=YES",
            "port_enable=NO",
            f"secure_chroot_dir={empty}",
            "xferlog_enable=NO",
            f"vsftpd_log_file={base / 'vsftpd.log'}",
            "utf8_filesystem=YES",
            "use_localtime=NO",
            "delay_failed_login=0",
            "delay_successful_login=0",
            "max_login_fails=10",
            "max_per_ip=0",
            "max_clients=0",
        ]
        tls_files = None
        if tls:
            tls_files = make_tls_files(base / "tls")
            lines += [
                "ssl_enable=YES",
                f"rsa_cert_file={tls_files.cert_file}",
                f"rsa_private_key_file={tls_files.key_file}",
                "force_local_logins_ssl=YES",
                "force_local_data_ssl=YES",
                "allow_anon_ssl=NO",
                "require_ssl_reuse=YES",
                "ssl_ciphers=HIGH",
            ]
        conf = base / "vsftpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        async with _subprocess([binary, str(conf)], port, base / "vsftpd.stderr"):
            yield FtpServer(
                name="vsftpd-tls" if tls else "vsftpd",
                host=HOST,
                port=port,
                root=root,
                url_path=str(root),
                username=username,
                password=password,
                tls=tls,
                ca_file=tls_files.ca_file if tls_files else None,
                features=frozenset({"mdtm"}),
            )


@contextlib.asynccontextmanager
async def proftpd_server() -> AsyncIterator[FtpServer]:
    """proftpd 1.3.8 from ``.cache/proftpd`` with mod_digest: MLSD, MDTM, HASH and XSHA256/XMD5."""
    binary = PROFTPD_DIR / "usr" / "sbin" / "proftpd"
    if not os.access(binary, os.X_OK):
        unavailable(f"proftpd is not unpacked at {binary} (run tests/tools/unpack-proftpd.sh)")
    username, password = ensure_test_user()
    with _tempdir("ftpsource-proftpd-") as base:
        root = _data_root(base)
        port = free_port()
        conf = base / "proftpd.conf"
        conf.write_text(
            "\n".join(
                [
                    'ServerName "ftpsource test"',
                    "ServerType standalone",
                    "DefaultServer on",
                    f"Port {port}",
                    f"DefaultAddress {HOST}",
                    "SocketBindTight on",
                    "UseIPv6 off",
                    "User nobody",
                    "Group nogroup",
                    "MaxInstances 50",
                    f"PidFile {base / 'proftpd.pid'}",
                    f"ScoreboardFile {base / 'proftpd.scoreboard'}",
                    f"SystemLog {base / 'proftpd.log'}",
                    "TransferLog none",
                    "WtmpLog off",
                    "DelayEngine off",
                    "UseReverseDNS off",
                    "RequireValidShell off",
                    "UseFtpUsers off",
                    "AuthPAM off",
                    "AuthOrder mod_auth_unix.c",
                    "MaxLoginAttempts 10",
                    "TimesGMT on",
                    "UseEncoding UTF-8 UTF-8",
                    f"ModulePath {PROFTPD_DIR / 'usr' / 'lib' / 'proftpd'}",
                    "LoadModule mod_digest.c",
                    "DigestEngine on",
                    "",
                ]
            )
        )
        argv = [str(binary), "--nodaemon", "--quiet", "--config", str(conf)]
        async with _subprocess(argv, port, base / "proftpd.stderr"):
            yield FtpServer(
                name="proftpd",
                host=HOST,
                port=port,
                root=root,
                url_path=str(root),
                username=username,
                password=password,
                features=frozenset({"mlsd", "mdtm", "hash"}),
            )


# --- SFTP ---------------------------------------------------------------------------------------------


def _write_known_hosts(path: Path, port: int, host_key: asyncssh.SSHKey) -> None:
    public = host_key.export_public_key("openssh").decode().strip()
    path.write_text(f"[{HOST}]:{port} {public}\n")


#: called before a directory is read: ``hook(sftp_server, path_bytes)``; may abort the connection.
ScandirHook = Callable[[asyncssh.SFTPServer, bytes], None]
#: rewrites what a directory listing returns: ``hook(path_bytes, names) -> names`` (a hostile server).
NamesHook = Callable[[bytes, list[asyncssh.SFTPName]], list[asyncssh.SFTPName]]


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, username: str, password: str, client_key: asyncssh.SSHKey) -> None:
        self._username = username
        self._password = password
        self._client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self._username and secrets.compare_digest(password, self._password)

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self._username and key.public_data == self._client_key.public_data


@contextlib.asynccontextmanager
async def asyncssh_server(
    *, scandir_hook: ScandirHook | None = None, names_hook: NamesHook | None = None
) -> AsyncIterator[SftpServer]:
    """An in-process asyncssh SFTP server chrooted to a temp dir, password and public-key auth.

    ``names_hook`` lets a test make it lie in directory listings, as a hostile server would.
    """
    with _tempdir("ftpsource-asyncssh-") as base:
        root = _data_root(base)
        username, password = "bob", "sftp-" + secrets.token_urlsafe(8)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        hook = scandir_hook

        class _SFTP(asyncssh.SFTPServer):
            async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
                if hook is not None:
                    hook(self, path)
                if names_hook is None:
                    async for name in super().scandir(path):
                        yield name
                    return
                names = [name async for name in super().scandir(path)]
                for name in names_hook(path, names):
                    yield name

        def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
            return _SFTP(chan, chroot=str(root).encode())

        server = await asyncssh.listen(
            HOST,
            0,
            server_host_keys=[host_key],
            server_factory=lambda: _SSHServer(username, password, client_key),
            sftp_factory=sftp_factory,
            allow_scp=False,
        )
        port = int(server.sockets[0].getsockname()[1])
        known_hosts = base / "known_hosts"
        _write_known_hosts(known_hosts, port, host_key)
        try:
            yield SftpServer(
                name="asyncssh",
                host=HOST,
                port=port,
                root=root,
                url_path="/",
                username=username,
                password=password,
                private_key=client_key.export_private_key("openssh").decode(),
                known_hosts=known_hosts,
                fingerprint=host_key.get_fingerprint("sha256"),
            )
        finally:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def openssh_server() -> AsyncIterator[SftpServer]:
    """OpenSSH's sshd with internal-sftp; the test user logs in with a password or a key."""
    binary = "/usr/sbin/sshd"
    if not os.access(binary, os.X_OK):
        unavailable("sshd is not installed (apt-get install openssh-server)")
    username, password = ensure_test_user()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation directory
    with _tempdir("ftpsource-sshd-") as base:
        root = _data_root(base)
        port = free_port()
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key_file = base / "ssh_host_ed25519_key"
        host_key_file.write_bytes(host_key.export_private_key("openssh"))
        host_key_file.chmod(0o600)
        keys_dir = base / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        (keys_dir / username).write_bytes(client_key.export_public_key("openssh"))
        (keys_dir / username).chmod(0o644)
        conf = base / "sshd_config"
        conf.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {HOST}",
                    f"HostKey {host_key_file}",
                    "PidFile none",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    f"AuthorizedKeysFile {keys_dir}/%u",
                    "StrictModes no",
                    "PermitRootLogin no",
                    f"AllowUsers {username}",
                    "UseDNS no",
                    "MaxStartups 100",
                    "MaxAuthTries 10",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        known_hosts = base / "known_hosts"
        _write_known_hosts(known_hosts, port, host_key)
        async with _subprocess([binary, "-D", "-e", "-f", str(conf)], port, base / "sshd.log"):
            yield SftpServer(
                name="openssh",
                host=HOST,
                port=port,
                root=root,
                url_path=str(root),
                username=username,
                password=password,
                private_key=client_key.export_private_key("openssh").decode(),
                known_hosts=known_hosts,
                fingerprint=host_key.get_fingerprint("sha256"),
            )


# --- misbehaving peers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never writes a byte; yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(handle, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


#: what a directory's listing sends: ``listing(directory)`` yields the data connection's chunks
ListingBody = Callable[[str], AsyncIterator[bytes]]


@dataclass
class HostileFtp:
    port: int
    #: every command received, in order
    commands: list[str] = field(default_factory=list)
    #: how each listing ended: "complete", or "aborted" when the client closed the data connection
    transfers: list[str] = field(default_factory=list)
    logins: int = 0

    def url(self, path: str = "/") -> str:
        return f"ftp://alice@{HOST}:{self.port}{path}"


@contextlib.asynccontextmanager
async def hostile_ftp_server(listing: ListingBody, *, flush_input: bool = False) -> AsyncIterator[HostileFtp]:
    """A small FTP responder whose directory listings are whatever ``listing`` sends (endless lines,
    a line that never ends, garbage). LIST only (no MLSD), MDTM answers a fixed time, any password
    works. A listing abandoned by the client is answered 426 on the control connection, as servers
    do. ``flush_input``: only the first command of each read is answered and the rest dropped, as a
    server that does not take commands sent back to back."""
    state = HostileFtp(0)
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        cwd = "/"
        data: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
        data_server: asyncio.Server | None = None

        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        async def transfer(directory: str) -> None:
            out = await asyncio.wait_for(data.get(), 10)
            writers.append(out)
            await reply("150 Here comes the directory listing.")
            try:
                async for chunk in listing(directory):
                    out.write(chunk)
                    await out.drain()
            except (ConnectionError, OSError):
                state.transfers.append("aborted")
                await reply("426 Failure writing network stream.")
                return
            finally:
                out.close()
            state.transfers.append("complete")
            await reply("226 Directory send OK.")

        try:
            await reply("220 hostile test server")
            while True:
                if flush_input:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    line = chunk.split(b"\n", 1)[0]  # what followed in the same read is dropped
                else:
                    line = await reader.readline()
                    if not line:
                        return
                command = line.decode().strip()
                state.commands.append(command)
                verb, _, arg = command.partition(" ")
                verb = verb.upper()
                if verb == "USER":
                    await reply("331 Please specify the password.")
                elif verb == "PASS":
                    state.logins += 1
                    await reply("230 Login successful.")
                elif verb == "FEAT":
                    await reply("211-Features:\r\n MDTM\r\n SIZE\r\n EPSV\r\n211 End")
                elif verb in ("TYPE", "OPTS", "NOOP"):
                    await reply("200 OK.")
                elif verb == "CWD":
                    cwd = arg
                    await reply("250 Directory successfully changed.")
                elif verb == "EPSV":
                    if data_server is not None:
                        data_server.close()
                    while not data.empty():  # opened for a command that was refused
                        data.get_nowait().close()

                    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                        await data.put(w)

                    data_server = await asyncio.start_server(accept, HOST, 0)
                    port = data_server.sockets[0].getsockname()[1]
                    await reply(f"229 Entering Extended Passive Mode (|||{port}|)")
                elif verb == "LIST":
                    await transfer(cwd)
                elif verb == "MDTM":
                    await reply("213 20250101123456")
                elif verb == "QUIT":
                    await reply("221 Goodbye.")
                    return
                else:
                    await reply("502 Command not implemented.")
        except (ConnectionError, OSError):
            pass
        finally:
            if data_server is not None:
                data_server.close()
            writer.close()

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(start, HOST, 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.close()
        await server.wait_closed()


@dataclass
class CountingListener:
    host: str
    port: int
    accepts: int = 0


@contextlib.asynccontextmanager
async def counting_listener(host: str = HOST) -> AsyncIterator[CountingListener]:
    """A TCP listener that counts the connections it accepts (and closes them): proof that nothing
    was sent to a host."""
    listener = CountingListener(host, 0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.accepts += 1
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    listener.port = int(server.sockets[0].getsockname()[1])
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()
