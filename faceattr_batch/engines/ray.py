"""`--engine ray`: predict and fid through Ray Data, with the local engine's output.

The inputs become a Dataset of chunks (one row = ``batch_size`` consecutive paths, cut where the local engine cuts
its batches, so the model sees identical batches and gives identical values). Decoding runs as CPU tasks
(``batches.decode_batch``); the model runs in an actor pool, one model load per actor, one GPU each when the run
is on ``cuda``. The driver reads the results back in input order (``preserve_order``):

- predict: each chunk comes back as the rows ``predict.batch_table`` makes; the driver streams them into
  ``writer``'s shards, so the output is the same single Parquet file, written atomically, and ``--resume`` works
  as with the local engine (same parts folder and manifest; the engine may even change between runs).
- fid: each chunk comes back as its ``FeatureStats`` (float64 sums and sums of outer products, the KID
  reservoir), merged in input order with ``FeatureStats.merge``: the sums equal one pass up to float64 rounding,
  and up to ``kid_reservoir`` images the reservoir is the local one row for row.

Ray is an optional extra and is imported only here, inside functions: the base install never loads it.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections import Counter

import numpy as np

from faceattr_batch.data.batches import Batch, decode_batch
from faceattr_batch.engines import INSTALL_HINT
from faceattr_batch.errors import FaceattrError, first_line

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
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(address="local", num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
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
        raise FaceattrError(
            f"--concurrency {size}: {size} actors x {per_actor['num_cpus']} CPUs leave none of the cluster's "
            f"{cpus} CPUs for decoding"
        )
    return size, per_actor


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


def decode_chunks(table, load):
    """The decode task: each chunk row gains ``errors`` (a reason or null per path) and its stacked pixels."""
    import pyarrow as pa

    errors, pixels, shapes, dtypes = [], [], [], []
    for start, paths in zip(table["start"].to_pylist(), table["paths"].to_pylist(), strict=True):
        batch = decode_batch(load, start, [os.fsdecode(p) for p in paths])
        errors.append([batch.errors.get(i) for i in range(len(paths))])
        pixels.append(batch.pixels.tobytes())
        shapes.append(list(batch.pixels.shape))
        dtypes.append(batch.pixels.dtype.str)
    columns = {
        "errors": pa.array(errors, pa.large_list(pa.string())),
        "pixels": pa.array(pixels, pa.large_binary()),
        "shape": pa.array(shapes, pa.list_(pa.int64())),
        "dtype": pa.array(dtypes, pa.string()),
    }
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def decoded_batches(table) -> list[Batch]:
    """The ``Batch`` of each decoded chunk row (what ``batches.iter_batches`` would have yielded)."""
    batches = []
    for row in table.to_pylist():
        # a writable copy: torch.from_numpy warns on the read-only view of the bytes
        pixels = np.frombuffer(row["pixels"], np.dtype(row["dtype"])).reshape(row["shape"]).copy()
        errors = {i: reason for i, reason in enumerate(row["errors"]) if reason is not None}
        ok = [i for i in range(len(row["errors"])) if i not in errors]
        batches.append(Batch(row["start"], [os.fsdecode(p) for p in row["paths"]], pixels, ok, errors))
    return batches


def model_stage(dataset, load, chunk_bytes: int, actor, constructor_args: tuple, size: int, per_actor: dict):
    """Decode tasks, then ``actor`` (a callable class) on each chunk in a pool of ``size``. ``chunk_bytes``: the
    decoded pixels of one chunk."""
    import ray.data

    # The decode tasks reserve memory: the worker process and a chunk's pixels twice (the stack and its bytes).
    # That also keeps Ray from fusing them into the actors (it fuses only equal resource requests), so decoding
    # overlaps inference instead of running inside the actor between batches.
    decoded = dataset.map_batches(
        decode_chunks,
        fn_kwargs={"load": load},
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
    context.enable_progress_bars = progress
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



# --- predict --------------------------------------------------------------------------------------------------


class Predictor:
    """The model actor: a decoded chunk -> its output rows (``predict.batch_table``, the output schema)."""

    def __init__(self, source: str, device, runtime: str, threads: int):
        from faceattr_batch.pipelines.predict import ModelRunner, output_schema

        self.runner = ModelRunner.load(source, device, runtime, threads)
        self.schema = output_schema()

    def __call__(self, table):
        import polars as pl
        import pyarrow as pa

        from faceattr_batch.pipelines.predict import LABEL_COLUMNS, batch_table

        name, version = self.runner.meta["name"], self.runner.meta["version"]
        tables = []
        for i, batch in enumerate(decoded_batches(table)):
            outputs = self.runner.infer(batch.pixels) if batch.ok else None
            keys = table["keys"][i].values.to_pylist()
            truth = pl.DataFrame([pl.from_arrow(table[column][i].values).alias(column) for column in LABEL_COLUMNS])
            tables.append(batch_table(batch, outputs, keys, truth, name, version).cast(self.schema))
        return pa.concat_tables(tables)


def predict_shards(space, pending, paths, keys, truth, runner, options, workers) -> int:
    """``predict._predict_shards`` on Ray: the pending shards' rows, in input order, into ``writer``'s shards.
    ``workers`` is Ray's to choose here (one decode task per free CPU)."""
    import polars as pl
    import pyarrow as pa

    from faceattr_batch.data.decode import load_chip
    from faceattr_batch.io import writer
    from faceattr_batch.pipelines.predict import output_schema

    if not pending:
        return 0
    ray = connect(options.ray_address)
    threads = options.threads or 1
    # on CPUs decoding a chip costs about what the model does (predict.split_cores): half the CPUs each
    size, per_actor = actor_plan(ray, runner.device.type, options.concurrency, threads, decode_share=0.5)
    positions = np.concatenate([np.arange(s.start, s.stop) for s in pending])
    oldest = pl.CompatLevel.oldest()  # large_string, not string_view: Arrow list arrays take it as values
    labels = {name: column.gather(positions).to_arrow(compat_level=oldest) for name, column in truth.to_dict().items()}
    chunks = chunk_dataset(
        ray,
        [paths[i] for i in positions],
        options.batch_size,
        {"keys": pa.array([keys[i] for i in positions], pa.large_string()), **labels},
    )
    load = functools.partial(load_chip, size=runner.input_size)
    args = (runner.meta["source"], runner.device, runner.runtime, threads)
    log.info("ray: %d model actors (%s), decoding in tasks", size, per_actor)
    chunk_bytes = options.batch_size * runner.input_size**2 * 3
    results = model_stage(chunks, load, chunk_bytes, Predictor, args, size, per_actor)
    tables = results_in_order(results, options.progress)
    writer.write_shards(space, pending, output_schema(), tables)
    return len(positions)


# --- fid --------------------------------------------------------------------------------------------------------


class FeatureExtractor:
    """The feature actor: a decoded chunk -> its ``FeatureStats`` bundle (ALL and any ``--by`` slices)."""

    def __init__(self, network, device_type: str, threads: int, options, seed: int):
        import torch

        self.device = torch.device(device_type)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.network = network.to(self.device)
        self.options, self.seed = options, seed

    def __call__(self, table):
        import pyarrow as pa
        import torch

        from faceattr_batch.pipelines.fid import add_batch, slice_labels

        rows = {"errors": [], "bundle": []}
        for batch in decoded_batches(table):
            bundle = {}
            labels = slice_labels(batch.paths, self.options.by) if self.options.by else None
            with torch.inference_mode():
                add_batch(bundle, batch, self.network, self.device, labels, self.options, self.seed)
            rows["errors"].append(list(batch.errors.values()))
            rows["bundle"].append(pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL))
        types = {"errors": pa.list_(pa.string()), "bundle": pa.binary()}
        return pa.table({name: pa.array(values, types[name]) for name, values in rows.items()})


def extract_stats(name: str, paths: list[str], options, network, seed: int):
    """``fid.extract_stats`` on Ray: per-chunk stats from the actors, merged in input order."""
    from faceattr_batch.models.device import resolve_device
    from faceattr_batch.pipelines.fid import ALL, INPUT_SIZE, FeatureStats, load_for_inception

    ray = connect(options.ray_address)
    device_type = resolve_device(options.device).type
    threads = 1  # per feature actor: more actors, not more threads, is how this scales
    # Inception costs far more than decoding and resizing an image: a CPU in 16 decodes (at least one)
    size, per_actor = actor_plan(ray, device_type, options.concurrency, threads, decode_share=1 / 16)
    load = functools.partial(load_for_inception, size=options.size)
    args = (network.cpu(), device_type, threads, options, seed)  # each actor moves its copy to its device
    chunk_bytes = options.batch_size * 3 * INPUT_SIZE**2 * 4  # float32 3 x 299 x 299 per image
    chunks = chunk_dataset(ray, paths, options.batch_size)
    log.info("ray: %s features in %d actors (%s), decoding in tasks", name, size, per_actor)
    results = model_stage(chunks, load, chunk_bytes, FeatureExtractor, args, size, per_actor)
    bundle: dict[str, FeatureStats] = {}
    errors: Counter = Counter()
    for table in results_in_order(results, options.progress):
        for reasons, blob in zip(table["errors"].to_pylist(), table["bundle"].to_pylist(), strict=True):
            errors.update(reasons)
            for key, stats in pickle.loads(blob).items():  # our own actors' bytes, from this run
                bundle[key] = bundle[key].merge(stats) if key in bundle else stats
    if ALL not in bundle:
        bundle[ALL] = FeatureStats(1, options.kid_reservoir, seed)
    return bundle, dict(errors)
