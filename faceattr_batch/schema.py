"""The predictions Parquet's one schema (``PREDICTION_FIELDS``); every column list, the Arrow schema, the face fields
and the label columns are derived from it.

Label convention, the same in every file the package writes (``index``, ``predict``, ``synth``'s manifest; ``crop``'s
manifest carries no labels): an attribute is an integer code column, ``gender`` 0 male / 1 female, ``race`` 0 White /
1 Black / 2 Asian / 3 Indian / 4 Others (``data.labels``), beside its readable label ``<column>_label``, a polars
``Enum`` (an ordered Arrow dictionary in the file, so it sorts in vocabulary order and costs a byte a row). Ages are
integers (true) or floats (predicted) beside their ``age_band`` Enum (``data.labels.AGE_BANDS``); a true age
labelled as a bin (FairFace's "20-29") is ``true_age_low`` / ``true_age_high`` with ``true_age`` null. In the
predictions: ``true_gender`` / ``true_gender_label``, ``pred_gender`` / ``pred_gender_label``, likewise ``race``, and
``true_age_band`` / ``pred_age_band``. Codes are what metrics read; labels are what people read.
"""

from __future__ import annotations

import functools

import polars as pl

from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACE_KEYS, RACES, age_band_expr, code_label

GENDER_LABEL = pl.Enum(GENDERS)
RACE_LABEL = pl.Enum(RACES)
AGE_BAND = pl.Enum(AGE_BAND_NAMES)
RACE_PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{race}" for race in RACE_KEYS)
# the roles in which a model saw an image (``models.seen_images``): learned from it | chose checkpoints, temperatures
TRAINING_ROLES = ("train", "validation")
TRAINING_ROLE = pl.Enum(TRAINING_ROLES)

# A detected face's fields (``faces.load.face_rows``); a chip is face 0, with the box that confirmed it under
# ``--faces auto``, none under ``--faces chips`` or when ``chip-unconfirmed``.
FACE_FIELDS: dict[str, pl.DataType] = {
    "face_index": pl.Int16,
    "framing": pl.String,
    **{name: pl.Float32 for name in ("box_x", "box_y", "box_w", "box_h", "det_score")},
    "landmarks": pl.Array(pl.Float32, 10),  # five (x, y) points in the photo's pixels
}

# an age labelled as a bin, both ends included (FairFace's "20-29"; its "more than 70" is 70 to data.labels.MAX_AGE);
# null where the age is labelled in years, or not at all
AGE_BIN_FIELDS: dict[str, pl.DataType] = {"true_age_low": pl.Int16, "true_age_high": pl.Int16}
# an age predicted as a bin, both ends included: another tool's (FairFace's classifier writes "20-29"); predict's own
# models predict years, so null in its output
PRED_AGE_BIN_FIELDS: dict[str, pl.DataType] = {"pred_age_low": pl.Int16, "pred_age_high": pl.Int16}

PREDICTION_FIELDS: dict[str, pl.DataType] = {
    "path": pl.String,
    "error": pl.String,  # why the image has no predictions (null when it has)
    "pred_gender": pl.Int8,
    "pred_gender_label": GENDER_LABEL,
    "p_female": pl.Float32,
    "pred_race": pl.Int8,
    "pred_race_label": RACE_LABEL,
    **{name: pl.Float32 for name in RACE_PROB_COLUMNS},
    "pred_age": pl.Float32,  # median of the predicted age distribution, years
    "age_low": pl.Float32,  # 10th percentile of the age distribution
    "age_high": pl.Float32,  # 90th percentile
    **PRED_AGE_BIN_FIELDS,
    "pred_age_band": AGE_BAND,
    "model_name": pl.String,
    "model_version": pl.String,
    # the model saw this file's bytes (its seen-images file lists their SHA-256); null when it records none
    "in_training": pl.Boolean,
    "training_role": TRAINING_ROLE,  # in which role; null when not seen (or not recorded)
    "true_age": pl.Int16,
    **AGE_BIN_FIELDS,
    "true_gender": pl.Int8,
    "true_gender_label": GENDER_LABEL,
    "true_race": pl.Int8,
    "true_race_label": RACE_LABEL,
    "true_age_band": AGE_BAND,
    "gender_correct": pl.Boolean,
    "race_correct": pl.Boolean,
    "age_error": pl.Float32,  # pred_age - true_age
    **FACE_FIELDS,
}

OUTPUT_COLUMNS: tuple[str, ...] = tuple(PREDICTION_FIELDS)
FACE_COLUMNS: tuple[str, ...] = tuple(FACE_FIELDS)
# the true labels: the age in years or as a bin, the gender and race codes
LABEL_COLUMNS: tuple[str, ...] = ("true_age", *AGE_BIN_FIELDS, "true_gender", "true_race")
LABEL_FIELDS: dict[str, pl.DataType] = {name: PREDICTION_FIELDS[name] for name in LABEL_COLUMNS}


def true_label_codes() -> list[pl.Expr]:
    """An index's or a parsed name's ``age``, ``gender``, ``race`` as the ``LABEL_COLUMNS`` (ages in years: no bin)."""
    return [
        (pl.lit(None) if name in AGE_BIN_FIELDS else pl.col(name.removeprefix("true_"))).cast(dtype).alias(name)
        for name, dtype in LABEL_FIELDS.items()
    ]


FLOAT_OUTPUTS: tuple[str, ...] = ("p_female", *RACE_PROB_COLUMNS, "pred_age", "age_low", "age_high")
# computed from the codes by ``derived_columns``
DERIVED_COLUMNS: tuple[str, ...] = (
    "pred_gender_label", "pred_race_label", "pred_age_band", "true_gender_label", "true_race_label", "true_age_band",
    "gender_correct", "race_correct", "age_error",
)  # fmt: skip


# the predictions Parquet's key-value metadata: the tool version, the run's options (JSON), the model that made them
# (JSON)
VERSION_KEY = "faceattr_batch.version"
OPTIONS_KEY = "faceattr_batch.options"
MODEL_KEY = "faceattr_batch.model"


def recorded(predictions, key: str) -> dict:
    """The JSON a predictions Parquet records under ``key`` (``MODEL_KEY``: name, version, source file...;
    ``OPTIONS_KEY``); {} for a file without it (another tool's, or unreadable: its reader says why)."""
    import json

    import pyarrow.parquet as pq

    try:
        saved = (pq.read_schema(predictions).metadata or {}).get(key.encode())
        return json.loads(saved) if saved else {}
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return {}


@functools.cache
def output_schema():
    """The Arrow schema of the predictions Parquet (polars' own conversion: its Enum columns read back as Enums)."""
    return pl.DataFrame(schema=PREDICTION_FIELDS).to_arrow(compat_level=pl.CompatLevel.oldest()).schema


def with_age_bins(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the age bin columns, true and predicted (``derived_columns`` reads them), all null where it
    has none: no labels file or tool gave bins, or a file written before they were added."""
    bins = AGE_BIN_FIELDS | PRED_AGE_BIN_FIELDS
    return frame.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in bins.items() if c not in frame.columns)


def derived_columns() -> list[pl.Expr]:
    """``DERIVED_COLUMNS`` from the code columns (pred_/true_ gender, race, age; the age bin): the one place codes
    become labels. An age labelled as a bin inside one report band gives ``true_age_band`` (FairFace's "20-29" is
    our 20-29; its "more than 70" spans two bands and gives none); an age predicted as a bin gives no
    ``pred_age_band`` (it needs no bin columns: frames without them, the training's own, get their labels too)."""
    exprs = []
    for side in ("pred", "true"):
        exprs += [
            code_label(pl.col(f"{side}_gender"), GENDERS).alias(f"{side}_gender_label"),
            code_label(pl.col(f"{side}_race"), RACES).alias(f"{side}_race_label"),
        ]
    low, high = (age_band_expr(pl.col(name)) for name in AGE_BIN_FIELDS)
    exprs += [
        age_band_expr(pl.col("pred_age")).alias("pred_age_band"),
        pl.coalesce(age_band_expr(pl.col("true_age")), pl.when(low == high).then(low)).alias("true_age_band"),
    ]
    return exprs + [
        (pl.col("pred_gender") == pl.col("true_gender")).alias("gender_correct"),
        (pl.col("pred_race") == pl.col("true_race")).alias("race_correct"),
        (pl.col("pred_age") - pl.col("true_age").cast(pl.Float32)).alias("age_error"),
    ]


def prediction_codes() -> dict[str, pl.Expr]:
    """``pred_gender`` and ``pred_race`` from ``p_female`` and the race probability columns: female where
    P(female) >= 0.5, the most probable race; null where the probabilities are (an image that failed)."""
    decided = pl.col("p_female").is_not_null()
    return {
        "pred_gender": pl.when(decided).then((pl.col("p_female") >= 0.5).cast(pl.Int8)),
        "pred_race": pl.when(decided).then(pl.concat_list(RACE_PROB_COLUMNS).list.arg_max().cast(pl.Int8)),
    }


def float_outputs(outputs: dict) -> dict:
    """A model's outputs (arrays p_female, race_probs N x 5, age_median, age_low, age_high: ``ModelRunner.infer``'s
    keys, ``AttrOutputs``' fields) as the predictions' ``FLOAT_OUTPUTS`` columns."""
    races = outputs["race_probs"]
    return {
        "p_female": outputs["p_female"],
        **{name: races[:, i] for i, name in enumerate(RACE_PROB_COLUMNS)},
        "pred_age": outputs["age_median"],
        "age_low": outputs["age_low"],
        "age_high": outputs["age_high"],
    }


def predictions_table(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (``path``, the model's ``FLOAT_OUTPUTS``, true label codes, any other prediction fields) as a whole
    predictions table: ``pred_gender`` / ``pred_race`` from the probabilities, the derived columns, every field it
    lacks null, in ``OUTPUT_COLUMNS`` order and types (a predictions Parquet that ``report`` reads)."""
    codes = {name: expr for name, expr in prediction_codes().items() if name not in frame.columns}
    filled = frame.with_columns(**codes)
    filled = filled.with_columns(
        **{name: pl.lit(None, dtype) for name, dtype in PREDICTION_FIELDS.items() if name not in filled.columns}
    )
    return filled.with_columns(derived_columns()).select(
        pl.col(name).cast(dtype) for name, dtype in PREDICTION_FIELDS.items()
    )


def error_kind(error: pl.Expr) -> pl.Expr:
    """The reason without its details ("unreadable image: image file is truncated" -> "unreadable image")."""
    return error.str.split(": ").list.first()


def error_counts(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    """Rows with an ``error``, counted by kind, the most frequent first (predict's summary, the report, crop)."""
    counts = (
        frame.lazy()
        .filter(pl.col("error").is_not_null())
        .group_by(error_kind(pl.col("error")).alias("kind"))
        .len()
        .sort("len", "kind", descending=[True, False])
        .collect()
    )
    return dict(counts.iter_rows())
