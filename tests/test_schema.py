"""The output schema's own promises (schema.py): the derived columns it names are the ones derived_columns makes,
with the schema's types, and with_age_bins fills only the bin columns a frame lacks."""

from __future__ import annotations

import polars as pl

from faceattr_batch.schema import AGE_BIN_FIELDS, DERIVED_COLUMNS, PREDICTION_FIELDS, derived_columns, with_age_bins


def test_derived_columns_make_the_named_schema_columns_with_their_types():
    made = pl.DataFrame(schema=PREDICTION_FIELDS).select(derived_columns())
    assert sorted(made.columns) == sorted(DERIVED_COLUMNS)
    assert {name: made.schema[name] for name in DERIVED_COLUMNS} == {
        name: PREDICTION_FIELDS[name] for name in DERIVED_COLUMNS
    }


def test_with_age_bins_fills_only_the_bin_columns_a_frame_lacks():
    frame = pl.DataFrame({"true_age_low": pl.Series([20], dtype=pl.Int16), "x": [1]})
    filled = with_age_bins(frame)
    assert filled.columns == ["true_age_low", "x", "true_age_high", "pred_age_low", "pred_age_high"]
    assert (
        filled.row(0) == (20, 1, None, None, None) and filled.schema["true_age_high"] == AGE_BIN_FIELDS["true_age_high"]
    )
    assert with_age_bins(filled).equals(filled)
