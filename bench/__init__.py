"""Reproducible benchmarks for ftpsource; results go to ``docs/benchmarks.md``.

Every result is a ratio against a baseline measured in the same run on the same machine, because the
machines we run on are small, shared and noisy: absolute times mean little, ratios travel.
Run ``python -m bench.run`` (all) or ``python -m bench.run NAME`` (one); see ``bench/run.py``.
"""

__all__: list[str] = []
