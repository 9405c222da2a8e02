"""Engines run a pipeline's batch work somewhere other than this process's loop. ``local`` is the pipelines' own
loop; ``ray`` (``engines/ray.py``, an optional extra, imported only when chosen) runs it on Ray Data. An engine is
handed the work as callables and imports no pipeline. The flags are checked here, without importing Ray."""

from __future__ import annotations

from faceattr_batch.errors import FaceattrError

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'faceattr-batch[ray]'"


def check_options(engine: str, address: str | None, concurrency: int | None) -> None:
    """Validate the engine flags before any work (no Ray import)."""
    if engine not in ENGINES:
        raise FaceattrError(f"--engine {engine!r}: use {' or '.join(ENGINES)}")
    if engine == "local" and (address is not None or concurrency is not None):
        raise FaceattrError("--ray-address and --concurrency go with --engine ray")
    if concurrency is not None and concurrency < 1:
        raise FaceattrError(f"--concurrency {concurrency}: must be >= 1")
