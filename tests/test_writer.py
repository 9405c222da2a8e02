"""writer: shards stream to parts, resume skips finished ones, the final file appears atomically."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faceattr_batch.errors import FaceattrError
from faceattr_batch.io import writer

SCHEMA = pa.schema([("path", pa.string()), ("value", pa.int64())])
KEYS = [f"/data/{i:03d}.jpg" for i in range(10)]


def _write(space, shard, chunk: int = 2) -> None:
    sink = writer.open_shard(space, shard, SCHEMA)
    for start in range(shard.start, shard.stop, chunk):
        stop = min(start + chunk, shard.stop)
        sink.write(pa.table({"path": KEYS[start:stop], "value": list(range(start, stop))}))
    sink.commit()


def test_shards_merge_in_order_into_one_file(tmp_path):
    out = tmp_path / "out.parquet"
    space = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    assert [(s.start, s.stop) for s in space.shards] == [(0, 4), (4, 8), (8, 10)]
    for shard in reversed(writer.pending_shards(space)):  # finishing order does not matter
        _write(space, shard)
    assert writer.pending_shards(space) == []
    writer.finalize(space, SCHEMA, {"faceattr_batch.extra": "x"})
    table = pq.read_table(out)
    assert table.column("value").to_pylist() == list(range(10))
    assert not writer.parts_dir(out).exists()
    metadata = pq.read_metadata(out).metadata
    assert metadata[b"faceattr_batch.extra"] == b"x"
    assert json.loads(metadata[writer.MANIFEST_KEY.encode()])["n_inputs"] == 10
    assert writer.is_complete(out, {"model": "m"}, KEYS, 4)
    assert not writer.is_complete(out, {"model": "other"}, KEYS, 4)


def test_resume_skips_marked_shards_and_drops_unfinished_parts(tmp_path):
    out = tmp_path / "out.parquet"
    space = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    _write(space, space.shards[1])
    unfinished = writer.open_shard(space, space.shards[0], SCHEMA)
    unfinished.write(pa.table({"path": KEYS[:2], "value": [0, 1]}))  # killed here: a .tmp, no marker
    again = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=True)
    assert [s.index for s in writer.pending_shards(again)] == [0, 2]
    assert not list(again.parts.glob("*.tmp"))
    fresh = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    assert [s.index for s in writer.pending_shards(fresh)] == [0, 1, 2]  # without --resume: start over


@pytest.mark.parametrize(
    ("options", "keys", "shard_size", "named"),
    [
        ({"model": "other"}, KEYS, 4, "model"),
        ({"model": "m"}, KEYS[:-1], 4, "inputs_sha256, n_inputs"),
        ({"model": "m"}, KEYS, 5, "shard_size \\(--shard-size, rounded up to --batch-size's multiple\\)"),
    ],
)
def test_resume_refuses_other_inputs_or_options(tmp_path, options, keys, shard_size, named):
    out = tmp_path / "out.parquet"
    writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    with pytest.raises(FaceattrError, match=f"different inputs or options \\({named}\\)"):
        writer.open_workspace(out, options, keys, shard_size=shard_size, resume=True)


def test_a_run_killed_while_its_parts_were_removed_resumes_to_the_same_file(tmp_path):
    """A reviewer's finding: finalize wrote the output, then was killed while removing the parts: a marker without
    its part made every later --resume fail ("cannot write ...part-00000.parquet")."""
    out = tmp_path / "out.parquet"
    space = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    for shard in writer.pending_shards(space):
        _write(space, shard)
    writer.finalize(space, SCHEMA)
    whole = pq.read_table(out)
    space.parts.mkdir()  # as the kill left it: the manifest and a marker, the part itself removed
    (space.parts / writer.MANIFEST_NAME).write_text(json.dumps(space.manifest))
    space.marker_path(space.shards[0]).write_text("{}")
    again = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=True)
    assert [s.index for s in writer.pending_shards(again)] == [0, 1, 2]
    for shard in writer.pending_shards(again):
        _write(again, shard)
    writer.finalize(again, SCHEMA)
    assert pq.read_table(out).equals(whole) and not space.parts.exists()


def test_a_part_damaged_since_it_was_written_is_done_again(tmp_path, caplog):
    """A reviewer's finding: a part cut short after its marker was trusted, and --resume ended in pyarrow's traceback
    in finalize, after every other shard was done."""
    out = tmp_path / "out.parquet"
    space = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    for shard in writer.pending_shards(space):
        _write(space, shard)
    part = space.part_path(space.shards[1])
    part.write_bytes(part.read_bytes()[:100])
    again = writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=True)
    with caplog.at_level("WARNING"):
        pending = writer.pending_shards(again)
    assert [s.index for s in pending] == [1]
    assert caplog.messages == [f"{part}: damaged since it was written; its shard is done again"]
    _write(again, pending[0])
    writer.finalize(again, SCHEMA)
    assert pq.read_table(out).column("value").to_pylist() == list(range(10))


def test_an_unreadable_manifest_is_one_line_on_resume(tmp_path):
    out = tmp_path / "out.parquet"
    writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=False)
    (writer.parts_dir(out) / writer.MANIFEST_NAME).write_text("")
    with pytest.raises(
        FaceattrError, match=r"^--resume: .*manifest.json is unreadable \(.*\); rerun without --resume$"
    ):
        writer.open_workspace(out, {"model": "m"}, KEYS, shard_size=4, resume=True)


def test_a_shard_with_missing_rows_is_not_committed(tmp_path):
    space = writer.open_workspace(tmp_path / "o.parquet", {}, KEYS, shard_size=4, resume=False)
    sink = writer.open_shard(space, space.shards[0], SCHEMA)
    sink.write(pa.table({"path": KEYS[:3], "value": [0, 1, 2]}))
    with pytest.raises(FaceattrError, match="wrote 3 inputs, expected 4"):
        sink.commit()
    assert not space.marker_path(space.shards[0]).exists()
    with pytest.raises(FaceattrError, match="not finished"):
        writer.finalize(space, SCHEMA)
