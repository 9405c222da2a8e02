"""--engine ray: the local engine's rows and FID on a two-node local Ray cluster, resume across engines, a model
actor killed mid-run, and the optional extra (never imported by the base path; a one-line error without it).

Ray starts once per session as ``ray.cluster_utils.Cluster`` (two nodes of one CPU each, in this process, on
127.0.0.1); every test has a hard timeout (faulthandler ends a hung run with its traces).
"""

from __future__ import annotations

import faulthandler
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import REPO, make_faces
from typer.testing import CliRunner

from faceattr_batch.cli import app
from faceattr_batch.engines import ray as ray_engine
from faceattr_batch.errors import FaceattrError
from faceattr_batch.models.registry import SEEN_IMAGES_FILE
from faceattr_batch.models.seen_images import seen_images_table, write_seen_images
from faceattr_batch.pipelines import fid
from faceattr_batch.pipelines.predict import PredictOptions, run
from faceattr_batch.schema import FLOAT_OUTPUTS, OUTPUT_COLUMNS

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install -e '.[ray]')")
TIMEOUT_S = 120
COMMON = {"batch_size": 16, "shard_size": 32, "runtime": "torch", "threads": 1, "progress": False}


@pytest.fixture(autouse=True)
def hard_timeout():
    faulthandler.dump_traceback_later(TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def ray_cluster():
    """Two one-CPU nodes on loopback; the engine finds Ray initialized and uses it."""
    for key, value in ray_engine.LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    faulthandler.dump_traceback_later(TIMEOUT_S, exit=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    faulthandler.cancel_dump_traceback_later()
    yield cluster
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """200 chips and the two bad files every engine must turn into error rows."""
    folder = tmp_path_factory.mktemp("faces")
    make_faces(folder, 200)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image")
    return folder


@pytest.fixture(scope="module")
def model_that_saw(faces, tiny_attr_model, tmp_path_factory) -> Path:
    """The tiny model beside a seen-images file (trained on 20 of the faces, validated on 10): every engine marks
    the same rows."""
    model = tmp_path_factory.mktemp("model") / "model.pt"
    shutil.copy(tiny_attr_model, model)
    files = sorted(faces.glob("*.jpg"))[:30]
    hashes = pl.Series([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    write_seen_images(
        seen_images_table(hashes, pl.Series(["train"] * 20 + ["val"] * 10)), model.with_name(SEEN_IMAGES_FILE)
    )
    return model


@pytest.fixture(scope="module")
def local_run(faces, model_that_saw, tmp_path_factory):
    """The local engine's result on ``faces``: the reference every Ray run must reproduce."""
    return _predict(faces, tmp_path_factory.mktemp("local") / "local.parquet", model_that_saw, workers=1)


def _predict(folder: Path, out: Path, model: Path, **kwargs):
    return run(PredictOptions(inputs=(str(folder),), output=out, model=str(model), **{**COMMON, **kwargs}))


def _assert_same_rows(frame: pl.DataFrame, reference: pl.DataFrame) -> None:
    assert frame.schema == reference.schema and frame.columns == list(OUTPUT_COLUMNS)
    assert frame["path"].to_list() == reference["path"].to_list()
    exact = [c for c in OUTPUT_COLUMNS if c not in FLOAT_OUTPUTS and c != "age_error"]
    assert frame.select(exact).equals(reference.select(exact))
    floats = [*FLOAT_OUTPUTS, "age_error"]
    diff = (frame.select(floats) - reference.select(floats)).select(pl.all().abs().max()).row(0)
    assert max(d or 0.0 for d in diff) <= 1e-5, dict(zip(floats, diff, strict=True))
    assert frame.select(floats).null_count().equals(reference.select(floats).null_count())


@pytest.mark.ray
@needs_ray
def test_ray_predict_gives_the_local_rows_with_error_rows(ray_cluster, faces, model_that_saw, local_run, tmp_path):
    ray_run = _predict(faces, tmp_path / "ray.parquet", model_that_saw, engine="ray")
    _assert_same_rows(pl.read_parquet(ray_run.output), pl.read_parquet(local_run.output))
    assert ray_run.images == local_run.images == 202 and ray_run.predicted == 200
    assert ray_run.errors == local_run.errors == {"empty file (0 bytes)": 1, "not an image (unidentified format)": 1}
    assert ray_run.metrics == local_run.metrics and ray_run.settings["engine"] == "ray"
    assert ray_run.training["train"] == 20 and ray_run.training["validation"] == 10
    assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.ray
@needs_ray
def test_a_killed_local_run_resumes_on_ray(ray_cluster, faces, model_that_saw, local_run, tmp_path):
    out = tmp_path / "out.parquet"
    local = (  # the library, not the CLI: the CLI's defaults (say, --faces) are not the options' defaults
        "import sys; from pathlib import Path; from faceattr_batch.pipelines.predict import PredictOptions, run\n"
        f"run(PredictOptions(inputs=({str(faces)!r},), output=Path({str(out)!r}), model={str(model_that_saw)!r}, "
        f"workers=0, **{COMMON!r}))"
    )
    env = {**os.environ, "FACEATTR_BATCH_TEST_KILL": "shard:1"}  # dies with shards 0 and 1 finished
    killed = subprocess.run([sys.executable, "-c", local], cwd=REPO, env=env, capture_output=True, timeout=TIMEOUT_S)
    assert killed.returncode == -9, killed.stderr
    resumed = _predict(faces, out, model_that_saw, engine="ray", resume=True)
    assert resumed.shards_skipped == 2 and resumed.processed == 202 - 64
    _assert_same_rows(pl.read_parquet(out), pl.read_parquet(local_run.output))


def _own_processes_titled(text: str) -> list[int]:
    """Processes started under this one (Ray's raylets and their workers) whose title contains ``text``."""

    def parent(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(status.split("PPid:")[1].split()[0])

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or text not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                continue
            pid = ancestor = int(entry.name)
            while ancestor > 1 and ancestor != os.getpid():
                ancestor = parent(ancestor)
            if ancestor == os.getpid():
                found.append(pid)
        except (OSError, IndexError, ValueError):  # a process that ended while we looked
            continue
    return found


@pytest.mark.ray
@needs_ray
def test_a_model_actor_killed_mid_run_loses_and_doubles_no_row(ray_cluster, faces, model_that_saw, local_run, tmp_path):
    out = tmp_path / "out.parquet"
    killed: list[int] = []

    def kill_the_model_actor_after_the_first_shard():
        deadline = time.monotonic() + TIMEOUT_S / 2
        while not killed and time.monotonic() < deadline:
            if list(tmp_path.glob("out.parquet.parts/part-*.done.json")):
                for pid in _own_processes_titled("MapBatches(PredictActor)"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_model_actor_after_the_first_shard, daemon=True)
    killer.start()
    result = _predict(faces, out, model_that_saw, engine="ray")
    killer.join()
    assert killed, "the model actor was not found"
    assert result.images == 202 and result.shards_skipped == 0
    _assert_same_rows(pl.read_parquet(out), pl.read_parquet(local_run.output))


def _tiny_features():
    """A stand-in for Inception made of torch's own layers (Ray workers unpickle it without our test modules)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.Tanh()
    ).eval()


@pytest.mark.ray
@needs_ray
def test_ray_fid_equals_the_local_fid(ray_cluster, tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    make_faces(real, 24, seed=1, size=24)
    make_faces(fake, 19, seed=2, size=32)
    (fake / "zero.jpg").write_bytes(b"")
    options = {"batch_size": 7, "kid_subsets": 5, "by": "gender", "progress": False}
    local = fid.compute(real, fake, fid.FidOptions(workers=0, **options), model=_tiny_features())
    on_ray = fid.compute(real, fake, fid.FidOptions(engine="ray", **options), model=_tiny_features())
    assert on_ray.fid == pytest.approx(local.fid, abs=1e-6) and local.fid > 0.01
    assert on_ray.kid_mean == pytest.approx(local.kid_mean, abs=1e-6)
    assert (on_ray.n_real, on_ray.n_fake) == (local.n_real, local.n_fake) == (24, 19)
    assert on_ray.decode_errors == local.decode_errors == {"fake": {"empty file (0 bytes)": 1}}
    assert set(on_ray.by) == set(local.by) == {"male", "female"}
    for label, expected in local.by.items():
        assert on_ray.by[label].fid == pytest.approx(expected.fid, abs=1e-6)


def _chip_record(path: str) -> tuple[str, int]:
    """What a face loader returns: a record per image, not a pixel array (the Batch then holds a list)."""
    from faceattr_batch.data.decode import read_rgb

    return os.path.basename(path), read_rgb(path).shape[0]


class _EchoWorker:
    """A worker that writes down what it was handed: the Batch's fields and its chunk's columns."""

    schema = pa.schema(
        [("position", pa.int64()), ("path", pa.string()), ("error", pa.string()), ("record", pa.string())]
        + [("height", pa.int64()), ("key", pa.string()), ("tag", pa.string())]
    )

    def __init__(self, tag: str):
        self.tag = tag

    def __call__(self, batch, columns):
        records = dict(zip(batch.ok, batch.items, strict=True))
        found = [records.get(i) for i in range(len(batch.paths))]
        return pa.table(
            {
                "position": [batch.start + i for i in range(len(batch.paths))],
                "path": batch.paths,
                "error": [batch.errors.get(i) for i in range(len(batch.paths))],
                "record": [None if r is None else r[0] for r in found],
                "height": [None if r is None else r[1] for r in found],
                "key": columns["key"],
                "tag": [self.tag] * len(batch.paths),
            },
            schema=self.schema,
        )


@pytest.mark.ray
@needs_ray
def test_run_in_order_hands_the_worker_the_local_batches_and_their_columns(ray_cluster, tmp_path):
    from ray import cloudpickle

    from faceattr_batch.data.batches import iter_batches

    paths = [str(p) for p in make_faces(tmp_path / "in", 7, size=20)]
    (tmp_path / "in" / "zero.jpg").write_bytes(b"")
    paths.insert(3, str(tmp_path / "in" / "zero.jpg"))
    keys = pa.array([f"k{i}" for i in range(len(paths))], pa.large_string())
    worker = _EchoWorker("t")
    local = pa.concat_tables(
        worker(batch, {"key": keys.to_pylist()[batch.start : batch.start + len(batch.paths)]})
        for batch in iter_batches(paths, _chip_record, 3, workers=0)
    )
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        tables = ray_engine.run_in_order(
            paths,
            _chip_record,
            3,
            _EchoWorker,
            ("t",),
            columns={"key": keys},
            device_type="cpu",
            threads=1,
            decode_share=0.5,
            item_bytes=1 << 10,
            address=None,
            concurrency=None,
            progress=False,
        )
        on_ray = pa.concat_tables(list(tables))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert on_ray.equals(local) and on_ray.num_rows == 8
    assert on_ray["error"][3].as_py() == "empty file (0 bytes)" and on_ray["height"][0].as_py() == 20


def test_run_in_order_with_no_paths_needs_no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` would fail
    tables = ray_engine.run_in_order(
        [],
        _chip_record,
        3,
        _EchoWorker,
        ("t",),
        device_type="cpu",
        threads=1,
        decode_share=0.5,
        item_bytes=1,
        address=None,
        concurrency=None,
        progress=False,
    )
    assert list(tables) == []


class _FailingFeatures:
    """A network that refuses its input the way our code refuses a run: with a FaceattrError."""

    def to(self, device):
        return self

    def cpu(self):
        return self

    def __call__(self, inputs):
        raise FaceattrError("the test network refuses every batch")


@pytest.mark.ray
@needs_ray
def test_a_faceattr_error_on_a_worker_is_one_line_on_the_driver(ray_cluster, tmp_path):
    from ray import cloudpickle

    make_faces(tmp_path / "in", 4, size=24)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        with pytest.raises(FaceattrError, match="^the test network refuses every batch$"):
            fid.compute(
                tmp_path / "in", tmp_path / "in", fid.FidOptions(engine="ray", progress=False), _FailingFeatures()
            )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# --- the optional extra (these run without Ray too) -------------------------------------------------------------


def test_the_base_import_path_and_help_never_import_ray():
    code = (
        "import sys; from typer.testing import CliRunner; from faceattr_batch.cli import app\n"
        "import faceattr_batch.pipelines.predict, faceattr_batch.pipelines.fid, faceattr_batch.engines.ray\n"
        "for command in ([], ['predict', '--help'], ['fid', '--help']):\n"
        "    assert CliRunner().invoke(app, [*command, '--help'] if not command else command).exit_code == 0\n"
        "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_engine_ray_without_the_extra_is_one_line_naming_it(tmp_path, tiny_attr_model, monkeypatch):
    make_faces(tmp_path / "in", 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(FaceattrError, match=r"pip install 'faceattr-batch\[ray\]'"):
        _predict(tmp_path / "in", tmp_path / "out.parquet", tiny_attr_model, engine="ray")
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out.parquet"), "-m", str(tiny_attr_model)]
    done = CliRunner().invoke(app, [*args, "--engine", "ray", "--json"])
    assert done.exit_code == 2 and done.output.count("\n") == 1
    assert done.output.startswith("error: --engine ray needs Ray") and "faceattr-batch[ray]" in done.output
    fid_done = CliRunner().invoke(app, ["fid", str(tmp_path / "in"), str(tmp_path / "in"), "--engine", "ray"])
    assert fid_done.exit_code == 2 and "faceattr-batch[ray]" in fid_done.output


def test_engine_flags_are_checked_before_work(tmp_path, tiny_attr_model):
    make_faces(tmp_path / "in", 2)
    with pytest.raises(FaceattrError, match="--engine 'spark': use local or ray"):
        _predict(tmp_path / "in", tmp_path / "out.parquet", tiny_attr_model, engine="spark")
    with pytest.raises(FaceattrError, match="go with --engine ray"):
        _predict(tmp_path / "in", tmp_path / "out.parquet", tiny_attr_model, concurrency=2)
    with pytest.raises(FaceattrError, match="go with --engine ray"):
        fid.compute(tmp_path / "in", tmp_path / "in", fid.FidOptions(ray_address="auto"), model=_tiny_features())


def test_help_names_the_extra_instead_of_eating_it_as_markup():
    done = CliRunner().invoke(app, ["fid", "--help"])
    flat = " ".join(done.output.replace("│", " ").split())  # the help box wraps lines
    assert done.exit_code == 0 and "needs the [ray] extra" in flat


def test_quiet_turns_ray_datas_progress_and_plan_logs_off(monkeypatch):
    """A reviewer's finding: `--quiet predict --engine ray` printed Ray Data's plan and, off a terminal, its progress
    every few seconds (14 INFO lines for 8 images)."""
    import logging
    from types import SimpleNamespace

    from faceattr_batch import progress

    class Dataset:
        context = SimpleNamespace(execution_options=SimpleNamespace())

        def iter_batches(self, **_):
            yield pa.table({"x": [1]})

    monkeypatch.setattr(progress, "_quiet", True)
    for name in ("ray.data", "ray.data._internal.progress"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    assert [t.num_rows for t in ray_engine.results_in_order(Dataset(), progress=True)] == [1]
    assert Dataset.context.enable_progress_bars is False
    assert logging.getLogger("ray.data").level == logging.WARNING
    assert logging.getLogger("ray.data._internal.progress").level == logging.ERROR
