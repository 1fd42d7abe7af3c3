"""File sets and early warnings through a real gRPC stream, across a server restart; staged members."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftpsource.clock import ShiftedClock
from ftpsource.store import Store
from tests.support.deadlines import next_boundary
from tests.support.harness import all_delivered, run_server, stream_to
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, moto_s3
from tests.support.sources import write_credentials


def of(kind: str, key: str | None = None, value: str | None = None):
    def pred(e: dict[str, Any]) -> bool:
        return e["type"] == f"ftpsource.{kind}" and (key is None or e["data"].get(key) == value)

    return pred


def config(root: Path) -> dict[str, Any]:
    return {
        "url": f"file://{root}",
        "stable_for": "300ms",
        "poll_interval": "5s",
        "expect": [
            {"path": "solo_%H%M.csv", "schedule": "*/10 * * * *", "grace": "1m", "warn_before": "5m"},
            {
                "set": "pair",
                "files": ["a_%H%M.csv", {"pattern": "b_%H%M_*.csv", "count": 2}],
                "schedule": "*/10 * * * *",
                "grace": "1m",
                "warn_before": "5m",
            },
        ],
    }


async def test_set_at_risk_complete_amended_once_across_restart(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    now = clock()
    # Start just after a boundary so the next deadline is ~10 minutes away: before its warning.
    clock.advance(600 - now % 600 + 5)
    deadline = next_boundary(clock())
    hm = deadline.strftime("%H%M")
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config(root)) as stream:
        (root / f"a_{hm}.csv").write_bytes(b"a1")
        (root / f"b_{hm}_1.csv").write_bytes(b"b1")
        await stream.until(of("file.ready", "path", f"b_{hm}_1.csv"))
        clock.advance(deadline.timestamp() - 300 - clock() + 1)  # past deadline - warn_before
        srv.app.wake_all()
        risk = await stream.until(of("set.at_risk"))
        assert risk["data"]["set"] == "pair" and risk["data"]["missing"] == [f"b_{hm}_*.csv"]
        assert sorted(m["path"] for m in risk["data"]["present"]) == [f"a_{hm}.csv", f"b_{hm}_1.csv"]
        # decided in the same poll and committed before the set's warning
        (solo,) = [e for e in stream.received if e["type"] == "ftpsource.file.at_risk"]
        assert solo["data"]["expected_path"] == f"solo_{hm}.csv"
        (root / f"b_{hm}_2.csv").write_bytes(b"b2")
        done = await stream.until(of("set.complete"))
        data = done["data"]
        assert data["late"] is False and data["generation"] == 1 and data["set"] == "pair"
        assert data["deadline"] == deadline.isoformat().replace("+00:00", "Z")
        assert sorted(m["path"] for m in data["members"]) == [f"a_{hm}.csv", f"b_{hm}_1.csv", f"b_{hm}_2.csv"]
        assert all(m["url"].startswith(f"file://{root}/") and m["checksum"]["value"] for m in data["members"])
        await all_delivered(srv)
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config(root)) as stream:
        (root / f"a_{hm}.csv").write_bytes(b"a1")  # identical bytes, new mtime: nothing
        (root / "tick").write_bytes(b"t")
        await stream.until(of("file.ready", "path", "tick"))
        (root / f"b_{hm}_1.csv").write_bytes(b"b1, corrected")
        amended = await stream.until(of("set.amended"))
        assert amended["data"]["generation"] == 2 and len(amended["data"]["members"]) == 3
        gens = {m["path"]: m["generation"] for m in amended["data"]["members"]}
        assert gens[f"b_{hm}_1.csv"] == 2 and gens[f"a_{hm}.csv"] == 1
        await all_delivered(srv)
        types = [e["type"] for e in stream.received]
        assert not {"ftpsource.set.complete", "ftpsource.set.at_risk", "ftpsource.file.at_risk"} & set(types)
        store = Store.open_read_only(srv.app.settings.state)
        (source,) = store.list_sources()
        assert [h.type for h in store.history(source.id, "pair")] == ["set_at_risk", "set_complete", "set_amended"]
        store.close()


async def test_set_incomplete_then_complete_late(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    clock.advance(600 - clock() % 600 + 5)
    deadline = next_boundary(clock())
    hm = deadline.strftime("%H%M")
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config(root)) as stream:
        (root / f"b_{hm}_1.csv").write_bytes(b"b1")
        await stream.until(of("file.ready", "path", f"b_{hm}_1.csv"))
        clock.advance(deadline.timestamp() + 61 - clock())  # past deadline + grace
        srv.app.wake_all()
        inc = await stream.until(of("set.incomplete"))
        assert inc["data"]["missing"] == [f"a_{hm}.csv", f"b_{hm}_*.csv"]
        (root / f"a_{hm}.csv").write_bytes(b"a")
        (root / f"b_{hm}_2.csv").write_bytes(b"b2")
        done = await stream.until(of("set.complete"))
        assert done["data"]["late"] is True and done["data"]["late_seconds"] >= 61
        assert len([e for e in stream.received if e["type"] == "ftpsource.set.at_risk"]) <= 1


async def test_set_members_carry_where_they_were_staged(tmp_path: Path, root: Path) -> None:
    with moto_s3("etl-raw") as s3:
        host = s3.endpoint.removeprefix("http://")
        creds = write_credentials(
            tmp_path, "minio", access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint=s3.endpoint, hosts=f"{host}\n"
        )
        cfg = {
            "url": f"file://{root}",
            "stable_for": "300ms",
            "poll_interval": "5s",
            "stage": {"url": "s3://etl-raw/landing", "credentials": "minio", "key": "{source_id}/{generation}/{path}"},
            "expect": [{"set": "pair", "files": ["a_%Y.csv", "b_%Y.csv"], "schedule": "0 0 1 1 *"}],
        }
        year = datetime.fromtimestamp(time.time(), UTC).year + 1
        async with run_server(tmp_path, credentials_dir=creds) as srv, stream_to(srv.port, cfg) as stream:
            for name in (f"a_{year}.csv", f"b_{year}.csv"):
                (root / name).write_bytes(name.encode())
            done = await stream.until(of("set.complete"))
            readies = {e["data"]["path"]: e["data"]["staged"] for e in stream.received if e["type"].endswith("ready")}
        members = {m["path"]: m["staged"] for m in done["data"]["members"]}
        assert members == readies and len(members) == 2  # exactly what each member's ready event said
        assert all(s3.client.head_object(Bucket="etl-raw", Key=s["key"]) for s in members.values())
