"""Static checks of the Dockerfile and .dockerignore (no Docker daemon is needed), plus the parts that
can run without one: the HEALTHCHECK command and building the wheel from the filtered build context."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import DEPLOY, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXPECTED_CMD = [
    "serve",
    "--state",
    "/var/lib/ftpsource/ftpsource.db",
    "--credentials-dir",
    "/etc/ftpsource/credentials",
    "--auth-token-file",
    "/etc/ftpsource/auth/token",
    "--log-format",
    "json",
]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"{self.keyword} should use the exec (JSON) form"
        return [str(item) for item in parsed]


def instructions(text: str) -> Iterator[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        keyword, _, value = logical.partition(" ")
        yield Instruction(keyword.upper(), value.strip())


def stages() -> list[list[Instruction]]:
    parsed = list(instructions(DOCKERFILE.read_text(encoding="utf-8")))
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args() -> dict[str, str]:
    args = {}
    for instruction in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.value.partition("=")
            args[name] = default
    return args


def final() -> list[Instruction]:
    return stages()[-1]


def only(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def test_multi_stage_build_ends_on_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    image = final()[0].value.split()[0]
    for name, default in global_args().items():
        image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
    assert image.split("@")[0] == "python:3.11-slim"
    builder_names = {s[0].value.split()[-1] for s in all_stages[:-1] if " AS " in s[0].value.upper()}
    copies = only(final(), "COPY")
    assert copies and all(c.value.startswith("--from=") for c in copies), "final stage copies only build results"
    assert {c.value.split()[0].removeprefix("--from=") for c in copies} <= builder_names
    # The builder installs the project; the final stage installs nothing.
    assert any("pip install" in r.value for s in all_stages[:-1] for r in only(s, "RUN"))
    assert not any("pip" in r.value or "apt-get" in r.value for r in only(final(), "RUN"))


def _from_images(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text(encoding="utf-8")
    args: dict[str, str] = {}
    images: list[str] = []
    for instruction in instructions(text):
        if instruction.keyword == "ARG" and not images:
            name, _, default = instruction.value.partition("=")
            args[name] = default
        if instruction.keyword == "FROM":
            image = instruction.value.split()[0]
            for name, default in args.items():
                image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
            images.append(image)
    return images


TEST_FTP_DOCKERFILE = DEPLOY / "examples" / "etl" / "test-ftp" / "Dockerfile"


def test_base_images_are_pinned_by_digest() -> None:
    """A tag moves; a digest names one image. Both images of the project start from the same one."""
    images = _from_images(DOCKERFILE) + _from_images(TEST_FTP_DOCKERFILE)
    stage_names = {s[0].value.split()[-1] for s in stages() if " AS " in s[0].value.upper()}
    pinned = {image for image in images if image not in stage_names}
    assert pinned and all(re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image) for image in pinned), pinned
    assert len(pinned) == 1, f"the Dockerfiles start from different images: {pinned}"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_normalise(name)] = version
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_dependency_and_what_it_pulls_in() -> None:
    """Every dependency (runtime and dev) and every package a runtime dependency pulls in has one
    exact version in constraints.txt, inside the range pyproject.toml allows: the image and CI
    install the same versions. After changing a dependency, run `make constraints`."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    declared = [Requirement(r) for r in pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"]]
    missing = [str(r) for r in declared if _normalise(r.name) not in pins]
    assert not missing, f"not pinned in constraints.txt (run `make constraints`): {missing}"
    for req in declared:
        assert req.specifier.contains(Version(pins[_normalise(req.name)]), prereleases=True), (req, pins)
    # What the runtime dependencies pull in, read from the installed packages' metadata. Only a package
    # installed at its pinned version says what the pinned version needs (`make` installs exactly the
    # pins, so in CI that is all of them); one that a shared environment holds at another version is
    # not followed.
    todo = [Requirement(r) for r in pyproject["dependencies"]]
    seen: set[str] = set()
    followed = 0
    while todo:
        req = todo.pop()
        name = _normalise(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        assert name in pins, f"{name} (needed by the image) is not pinned (run `make constraints`)"
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed here, so what it needs cannot be checked")
        if Version(installed) == Version(pins[name]):
            followed += 1
            todo += [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
    assert followed and len(seen) > len(pyproject["dependencies"])


def test_image_and_ci_install_with_the_constraints() -> None:
    builder = stages()[0]
    runs = [i for i in builder if i.keyword == "RUN"]
    installs = [r for r in runs if "pip install -c constraints.txt" in r.value]
    assert installs, "the builder must install the dependencies with -c constraints.txt"
    # Layer caching: the dependencies are installed before the source is copied in, so editing the
    # source does not reinstall them.
    first_install = builder.index(installs[0])
    copies = [i for i in builder if i.keyword == "COPY"]
    source_copies = [c for c in copies if "ftpsource" in c.value]
    assert source_copies and all(builder.index(c) > first_install for c in source_copies)
    early = [c for c in copies if builder.index(c) < first_install]
    assert {w for c in early for w in c.value.split()[:-1]} <= {"constraints.txt", "pyproject.toml"}, early
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[dev\]'", makefile)
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert not _ignored("constraints.txt", _dockerignore_patterns())


def test_runs_as_the_same_non_root_user_as_the_deployment() -> None:
    users = only(final(), "USER")
    assert users, "the final stage must set USER"
    user = users[-1].value.split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    deployment = yaml.safe_load((DEPLOY / "base" / "deployment.yaml").read_text(encoding="utf-8"))
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsUser"] == int(user) == 10001
    assert pod_security["fsGroup"] == int(users[-1].value.split(":")[1])


def test_ports_volume_and_environment() -> None:
    exposed = {p.split("/")[0] for i in only(final(), "EXPOSE") for p in i.value.split()}
    assert {"8080", "9090"} <= exposed
    volumes = [v for i in only(final(), "VOLUME") for v in (json.loads(i.value) if i.value.startswith("[") else
               i.value.split())]  # fmt: skip
    assert "/var/lib/ftpsource" in volumes
    env = " ".join(i.value for i in only(final(), "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "a read-only root filesystem cannot take .pyc files"


def test_entrypoint_and_cmd_match_the_deployment() -> None:
    (entrypoint,) = only(final(), "ENTRYPOINT")
    (cmd,) = only(final(), "CMD")
    assert entrypoint.exec_form() == ["ftpsource"]
    assert cmd.exec_form() == EXPECTED_CMD
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "ftpsource" in pyproject["project"]["scripts"], "ENTRYPOINT needs the console script"

    def flags(args: list[str]) -> dict[str, str]:
        out, items = {}, iter(args)
        for arg in items:
            if arg.startswith("--"):
                key, eq, value = arg[2:].partition("=")
                out[key] = value if eq else next(items)
        return out

    deployment = yaml.safe_load((DEPLOY / "base" / "deployment.yaml").read_text(encoding="utf-8"))
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    image_flags, pod_flags = flags(EXPECTED_CMD), flags(args)
    for key in ("state", "credentials-dir", "auth-token-file", "log-format"):
        assert pod_flags[key] == image_flags[key], key


def _healthcheck_code() -> str:
    (healthcheck,) = only(final(), "HEALTHCHECK")
    options, _, command = healthcheck.value.partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    argv = json.loads(command) if command.startswith("[") else shlex.split(command)
    assert argv[:2] == ["python", "-c"], "slim images have no curl: the check must use the interpreter"
    assert "urllib" in argv[2] and "http://127.0.0.1:9090/healthz" in argv[2]
    return str(argv[2])


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_reports_the_healthz_status(status: int, healthy: bool) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = _healthcheck_code().replace("127.0.0.1:9090", f"127.0.0.1:{server.server_address[1]}")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert (result.returncode == 0) is healthy, result.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Go's filepath.Match plus Docker's ``**`` read it:
    ``*`` and ``?`` stay within one path segment, ``**`` spans any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories
    decides; ``!`` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    patterns = _dockerignore_patterns()
    for kept in ("pyproject.toml", "constraints.txt", "README.md", "ftpsource/config.py",
                 "ftpsource/_proto/generic_pb2.py", "proto/generic.proto"):  # fmt: skip
        assert not _ignored(kept, patterns), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/unit/test_config.py", "deploy/base/deployment.yaml",
                    "ftpsource/__pycache__/config.cpython-311.pyc", "ftpsource.db", "bench/run.py"):  # fmt: skip
        assert _ignored(dropped, patterns), dropped


def test_filtered_build_context_builds_the_wheel(tmp_path: Path) -> None:
    """What `pip wheel .` in the builder stage sees: the repo through .dockerignore."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str) and not (REPO / readme).exists():
        pytest.skip(f"pyproject.toml names {readme}, which does not exist yet: the image build would fail")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build the wheel without network access")
    patterns = _dockerignore_patterns()
    context = tmp_path / "context"
    copied = 0
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and not relative.startswith((".venv/", ".git/")) and not _ignored(relative, patterns):
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    assert copied < 200, f"{copied} files in the build context: .dockerignore lets too much through"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("ftpsource-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ftpsource = ftpsource.cli:main" in archive.read(entry_points).decode()
    assert {"ftpsource/config.py", "ftpsource/_proto/generic_pb2.py"} <= names
    assert not any(n.startswith(("tests/", "deploy/")) for n in names)
