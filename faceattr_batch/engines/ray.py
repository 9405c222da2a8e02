"""`--engine ray`: a pipeline's batch work through Ray Data, with the local engine's results, in input order.

``run_in_order`` is handed the work as callables and imports no pipeline (as img2dataset hands its ``downloader``
to the distributor): ``load`` (one path -> an item) runs in CPU decode tasks, a chunk of ``batch_size``
consecutive paths at a time, cut where the local engine cuts its batches, so the worker sees the same
``batches.Batch`` that ``batches.iter_batches`` would have yielded. The worker (a class, one instance per actor,
one model load each, one GPU each on ``cuda``) turns each decoded chunk into an Arrow table; the driver reads the
tables back in input order (``preserve_order``). Predict streams them into its resumable writer; fid merges the
per-chunk feature statistics.

Ray is an optional extra and is imported only inside functions here: importing this module never loads it.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator

import numpy as np

from faceattr_batch.data.batches import Batch, decode_batch
from faceattr_batch.engines import INSTALL_HINT
from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.models.device import available_cores
from faceattr_batch.progress import is_quiet

log = logging.getLogger(__name__)

DECODE_WORKER_BYTES = 256 << 20  # a decode worker process (Python, numpy, Pillow) measured ~110 MiB
MAX_INPUT_BLOCKS = 10_000  # chunks are grouped into at most this many input blocks (the driver tracks each one)
# For a local instance only: bind 127.0.0.1 (not the network interface), no token auth, no usage reporting, no
# 30-90 s drain at shutdown. Joining a cluster keeps its own settings (the driver must use the node's address).
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}


def connect(address: str | None):
    """The ``ray`` module, connected: to the running session, to ``address``, or to a new local instance sized
    to this machine (``address="local"``: a bare ``ray.init()`` would join whatever cluster /tmp/ray names)."""
    if address is None:
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)  # read when ray is imported
    try:
        import ray
        import ray.data  # noqa: F401  (the extra's Data part, checked here)
    except ImportError as err:
        raise FaceattrError(f"--engine ray needs Ray ({err.name or 'ray'} is missing): {INSTALL_HINT}") from None
    if not ray.is_initialized():
        if address is None:
            ray.init(
                address="local", num_cpus=available_cores(), include_dashboard=False, logging_level=logging.WARNING
            )
        else:
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except (ConnectionError, ValueError) as err:
                raise FaceattrError(f"--ray-address {address}: {first_line(err)}") from None
    elif address is not None:
        log.info("Ray is already initialized in this process; --ray-address %s is not used", address)
    return ray


def actor_plan(ray, device_type: str, concurrency: int | None, threads: int, decode_share: float) -> tuple[int, dict]:
    """(pool size, resources per actor). On CPUs the actors get what decoding leaves: ``decode_share`` of the
    CPUs, at least one. A pool that takes every CPU never makes progress (decoding waits for a free CPU that
    never comes), so it is refused."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if device_type == "cuda":
        if gpus < 1:
            raise FaceattrError("--device cuda: the Ray cluster has no GPUs")
        size, per_actor = concurrency or gpus, {"num_cpus": 1, "num_gpus": 1}
    else:
        decode_cpus = max(1, round(cpus * decode_share))
        size, per_actor = concurrency or max(1, (cpus - decode_cpus) // threads), {"num_cpus": threads}
    if size * per_actor["num_cpus"] >= cpus:
        given = f"--concurrency {size}" if concurrency else f"--threads {threads}"  # the option that took them
        raise FaceattrError(
            f"{given}: {size} actors x {per_actor['num_cpus']} CPUs leave none of the cluster's {cpus} CPUs for "
            "decoding"
        )
    return size, per_actor


def run_in_order(
    paths: list[str],
    load: Callable[[str], object],
    batch_size: int,
    worker: type,
    worker_args: tuple,
    *,
    columns: dict | None = None,
    device_type: str,
    threads: int,
    decode_share: float,
    item_bytes: int,
    address: str | None,
    concurrency: int | None,
    progress: bool,
    digests: bool = False,
) -> Iterator:
    """What ``worker(*worker_args)(batch, chunk_columns)`` returned for each chunk, as Arrow tables in input order.

    ``batch`` is the chunk's ``Batch`` (start, paths, decoded items, ok, errors) as ``iter_batches(paths, load,
    batch_size, ...)`` yields it locally; ``chunk_columns`` is ``{name: python list}`` of ``columns`` (Arrow arrays
    aligned with ``paths``) for the chunk's paths. ``threads``: CPUs per actor on the CPU; ``decode_share``: the
    share of CPUs left to decode tasks; ``item_bytes``: one decoded item's memory. Ray is connected and the pool
    planned before this returns (a missing extra or a bad address fails here); a FaceattrError raised in a worker
    comes back as one line. ``digests``: each ``Batch`` also carries its files' SHA-256 (``decode_batch``)."""
    if not paths:
        return iter(())
    ray = connect(address)
    size, per_actor = actor_plan(ray, device_type, concurrency, threads, decode_share)
    chunks = chunk_dataset(ray, paths, batch_size, columns)
    log.info("ray: %d %s actors (%s), decoding in tasks", size, worker.__name__, per_actor)
    actor = actor_class(worker)
    results = model_stage(chunks, load, batch_size * item_bytes, actor, worker_args, size, per_actor, digests)
    return results_in_order(results, progress)


# --- chunks: paths in, decoded batches out ---------------------------------------------------------------------


def chunk_dataset(ray, paths: list[str], batch_size: int, columns: dict | None = None):
    """One row per ``batch_size`` consecutive paths: ``start``, ``paths`` (bytes: any file name survives) and
    each of ``columns`` (an Arrow array aligned with ``paths``) as a list per chunk."""
    import pyarrow as pa

    starts = np.arange(0, len(paths), batch_size, dtype=np.int64)
    offsets = pa.array(np.append(starts, len(paths)), pa.int64())
    lists = {"paths": pa.array([os.fsencode(p) for p in paths], pa.large_binary())} | dict(columns or {})
    table = pa.table(
        {"start": starts} | {name: pa.LargeListArray.from_arrays(offsets, values) for name, values in lists.items()}
    )
    return ray.data.from_arrow(table, override_num_blocks=max(1, min(len(starts), MAX_INPUT_BLOCKS)))


def decode_chunks(table, load, digests: bool = False):
    """The decode task: each chunk row's paths become its pickled ``Batch`` (stacked pixels, or a list of
    records when ``load`` returns records), which replaces them."""
    import pyarrow as pa

    batches = [
        pickle.dumps(
            decode_batch(load, start, [os.fsdecode(p) for p in paths], digests), protocol=pickle.HIGHEST_PROTOCOL
        )
        for start, paths in zip(table["start"].to_pylist(), table["paths"].to_pylist(), strict=True)
    ]
    return table.drop_columns(["paths"]).append_column("batch", pa.array(batches, pa.large_binary()))


class WorkerActor:
    """Ray's callable class around a pipeline's worker: decoded chunk rows -> (Batch, chunk columns) -> the
    worker's tables. ``actor_class`` makes one subclass per worker class."""

    worker_class: type

    def __init__(self, *worker_args):
        self.worker = self.worker_class(*worker_args)

    def __call__(self, table):
        import pyarrow as pa

        names = [name for name in table.column_names if name not in ("start", "batch")]
        tables = []
        for i in range(table.num_rows):
            batch: Batch = pickle.loads(table["batch"][i].as_py())  # our own decode tasks' bytes, from this run
            tables.append(self.worker(batch, {name: table[name][i].values.to_pylist() for name in names}))
        return pa.concat_tables(tables)


def actor_class(worker: type) -> type:
    """A ``WorkerActor`` named after ``worker``: Ray names the stage, its progress bar and its processes after
    the class (``MapBatches(FeatureActor)``), which is what a reader of them wants to see."""
    return type(worker.__name__, (WorkerActor,), {"worker_class": worker, "__doc__": worker.__doc__})


def model_stage(
    dataset, load, chunk_bytes: int, actor: type, constructor_args: tuple, size: int, per_actor: dict, digests=False
):
    """Decode tasks, then ``actor`` (a callable class) on each chunk in a pool of ``size``. ``chunk_bytes``: the
    decoded items of one chunk; ``digests``: the decode tasks also hash each file."""
    import ray.data

    # The decode tasks reserve memory: the worker process and a chunk's items twice (the stack and its bytes).
    # That also keeps Ray from fusing them into the actors (it fuses only equal resource requests), so decoding
    # overlaps inference instead of running inside the actor between batches.
    decoded = dataset.map_batches(
        decode_chunks,
        fn_kwargs={"load": load, "digests": digests},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=1,
        memory=DECODE_WORKER_BYTES + 2 * chunk_bytes,
    )
    return decoded.map_batches(
        actor,
        fn_constructor_args=constructor_args,
        compute=ray.data.ActorPoolStrategy(size=size),
        batch_size=1,  # one chunk per call: the local engine's batches
        batch_format="pyarrow",
        **per_actor,
    )


def results_in_order(dataset, progress: bool):
    """The pipeline's output tables in input order. Ray's own progress bars (per stage, with the cluster's
    resources) are the progress display, shown unless ``progress`` is off (--json). A FaceattrError raised on a
    worker (say, a model file it cannot read) comes back as itself: one line, not a remote traceback."""
    context = dataset.context
    context.execution_options.preserve_order = True
    progress = progress and not is_quiet()
    context.enable_progress_bars = progress
    if not progress:  # --quiet, --json: Ray Data logs its plan at INFO, and warns that its bars are off
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context.raise_original_map_exception = True  # not wrapped in UserCodeException, so the cause survives
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as err:
        cause = _faceattr_cause(err)
        if cause is None:
            raise
        raise FaceattrError(str(cause).splitlines()[0]) from None  # Ray appends its retry advice to the message


def _faceattr_cause(err: BaseException) -> FaceattrError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        raised = getattr(err, "cause", None)  # a RayTaskError's: the exception the worker raised
        if isinstance(err, FaceattrError) and raised is None:
            return err
        err = raised or err.__cause__
    return None
