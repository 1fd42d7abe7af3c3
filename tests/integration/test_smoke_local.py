from __future__ import annotations

from pathlib import Path

from tests.support.harness import run_server, stream_to


async def test_new_file_is_reported_once(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    async with (
        run_server(tmp_path) as srv,
        stream_to(srv.port, {"url": f"file://{root}", "stable_for": "300ms", "poll_interval": "1s"}) as stream,
    ):
        (root / "a.csv").write_text("x,y\n1,2\n")
        ev = await stream.next()
        assert ev["type"] == "ftpsource.file.ready"
        assert ev["data"]["path"] == "a.csv"
        assert ev["data"]["generation"] == 1
