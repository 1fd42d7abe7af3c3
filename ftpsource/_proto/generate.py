"""Regenerate the gRPC stubs from proto/*.proto (run with ``make proto``).

The generated files are committed so the package installs without grpcio-tools;
``tests/unit/test_proto_fresh.py`` regenerates into a temp dir and compares.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent
#: Argo's contract (generic) and ftpsource's own service (settlement).
PROTOS = ("generic", "settlement")


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
    from grpc_tools import protoc  # dev dependency, imported only here

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(PROTO_DIR / f"{name}.proto") for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for name in PROTOS:
        grpc_file = out_dir / f"{name}_pb2_grpc.py"
        # grpc_tools writes an absolute import; the stubs live inside a package.
        text = grpc_file.read_text()
        text = re.sub(rf"^import {name}_pb2 as", f"from . import {name}_pb2 as", text, flags=re.M)
        grpc_file.write_text(text)
    return sorted(path for name in PROTOS for path in out_dir.glob(f"{name}_pb2*"))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR):
        print(path)
