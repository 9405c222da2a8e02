"""predict's batch worker: one decoded batch through the model into its output rows, an Arrow table in the
predictions schema's order (``schema.OUTPUT_COLUMNS``). The local loop runs ``BatchRows`` in the predict process;
Ray runs it in ``PredictActor`` model actors, each loading its own model."""

from __future__ import annotations

import numpy as np
import polars as pl

from faceattr_batch.data.batches import Batch
from faceattr_batch.faces.load import FRAMING_CHIP, face_rows
from faceattr_batch.models.runtime import ModelRunner
from faceattr_batch.models.seen_images import SeenImages
from faceattr_batch.schema import (
    FACE_FIELDS,
    FLOAT_OUTPUTS,
    LABEL_COLUMNS,
    LABEL_FIELDS,
    OUTPUT_COLUMNS,
    PRED_AGE_BIN_FIELDS,
    TRAINING_ROLE,
    derived_columns,
    float_outputs,
    output_schema,
    prediction_codes,
)

KEY = "key"  # the per-path column handed to the batch worker beside the labels: the row's ``path`` value


class BatchRows:
    """One decoded batch -> its output rows, an Arrow table in the schema's order. ``columns``: the rows' ``key``
    and true label codes, a list each (what ``engines.ray.run_in_order`` hands its worker). ``seen``: the images the
    model saw (the batches then carry their files' digests), or None."""

    def __init__(self, runner: ModelRunner, detect: bool, chunk: int, seen: SeenImages | None = None):
        self.runner, self.detect, self.chunk = runner, detect, chunk  # chunk: faces the model runs at a time
        self.seen = seen

    def __call__(self, batch: Batch, columns: dict[str, list]):
        truth = pl.DataFrame({name: columns[name] for name in LABEL_COLUMNS}, schema=LABEL_FIELDS)
        marks = None if self.seen is None or batch.digests is None else self.seen.marks(batch.digests)
        if self.detect:
            return self._faces(batch, columns[KEY], truth, marks).cast(output_schema())
        outputs = self.runner.infer(batch.items) if batch.ok else None
        return batch_table(batch, outputs, columns[KEY], truth, self.runner.meta, marks=marks).cast(output_schema())

    def _faces(self, batch: Batch, keys: list[str], truth: pl.DataFrame, marks: dict | None):
        """A batch of FoundFaces records -> one output row per face (the model runs ``chunk`` faces at a time)."""
        rows = face_rows(batch, self.runner.input_size)
        outputs = None
        if rows.ok:
            chips = rows.pixels
            parts = [self.runner.infer(chips[i : i + self.chunk]) for i in range(0, len(chips), self.chunk)]
            outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        # a file name's label describes one person: the faces of a photo with several get no label
        labelled = np.where(rows.faces_in_image > 1, len(batch.paths), rows.image)
        row_truth = pl.concat([truth, truth.clear(1)])[labelled]
        per_face = Batch(batch.start, [batch.paths[i] for i in rows.image], rows.pixels, rows.ok, rows.errors)
        row_keys = [keys[i] for i in rows.image]
        if marks is not None:  # a photo's marks on each of its faces
            marks = {name: [values[i] for i in rows.image] for name, values in marks.items()}
        return batch_table(per_face, outputs, row_keys, row_truth, self.runner.meta, rows.columns, marks)


class PredictActor(BatchRows):
    """A Ray model actor: loads its own model (a model is not shipped between processes)."""

    def __init__(self, source: str, device, runtime: str, threads: int, detect: bool, chunk: int, seen_path=None):
        seen = None if seen_path is None else SeenImages.load(seen_path)
        super().__init__(ModelRunner.load(source, device, runtime, threads), detect, chunk, seen)


def batch_table(
    batch: Batch, outputs: dict | None, keys: list[str], truth: pl.DataFrame, meta: dict, faces=None, marks=None
):
    """One batch's rows as an Arrow table in ``OUTPUT_COLUMNS`` order (null predictions where decode failed).
    ``faces``: the face columns (``FACE_FIELDS``), a value per row; None for chips (face 0, framing ``chip``).
    ``marks``: ``in_training`` and ``training_role``, a value per row (``SeenImages.marks``); None: nulls."""
    n = len(batch.paths)
    marks = marks or {"in_training": [None] * n, "training_role": [None] * n}
    rows = pl.DataFrame(
        {"_row": np.arange(n, dtype=np.int32), "path": keys, "error": [batch.errors.get(i) for i in range(n)], **marks},
        schema_overrides={
            "path": pl.String,
            "error": pl.String,
            "in_training": pl.Boolean,
            "training_role": TRAINING_ROLE,
        },
    ).hstack(truth)
    if outputs is not None:
        preds = pl.DataFrame({"_row": np.asarray(batch.ok, dtype=np.int32), **float_outputs(outputs)})
        rows = rows.join(preds, on="_row", how="left", maintain_order="left")
    else:
        rows = rows.with_columns(**{column: pl.lit(None, pl.Float32) for column in FLOAT_OUTPUTS})
    rows = rows.with_columns(
        **prediction_codes(),
        **{column: pl.lit(None, dtype) for column, dtype in PRED_AGE_BIN_FIELDS.items()},  # our models predict years
        model_name=pl.lit(meta["name"], pl.String),
        model_version=pl.lit(meta["version"], pl.String),
    ).with_columns(derived_columns())
    if faces is not None:
        rows = rows.hstack(pl.DataFrame(faces, schema=FACE_FIELDS))
    else:
        decoded = pl.col("error").is_null()
        rows = rows.with_columns(
            face_index=pl.when(decoded).then(pl.lit(0, pl.Int16)),
            framing=pl.when(decoded).then(pl.lit(FRAMING_CHIP)),
            **{
                name: pl.lit(None, dtype)
                for name, dtype in FACE_FIELDS.items()
                if name not in ("face_index", "framing")
            },
        )
    return rows.select(OUTPUT_COLUMNS).to_arrow(compat_level=pl.CompatLevel.oldest())
