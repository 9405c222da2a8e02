"""Ages in years put in another run's bins (``report --compare``): ours (years) against FairFace's classifier (bins
only: "20-29", "70+") share no age metric, MAE needing years on both sides and the share in the right bin a bin.
Where one run predicts years only and the other bins only, the first's ages (rounded to whole years, halves up, as
``metrics.attributes.age_in_bin`` rounds) go into the second's bins too, its years kept: both are then measured
by the share in the right bin on the same images, and paired; its MAE stays its own."""

from __future__ import annotations

import polars as pl

from faceattr_batch.data.labels import MAX_AGE
from faceattr_batch.schema import PREDICTION_FIELDS


def binned_like(years: pl.DataFrame, bins: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[int, int]]] | None:
    """``years`` with ``pred_age_low`` / ``pred_age_high`` of the bin of ``bins``' own (the distinct predicted
    ones, by their low end) each age falls in, and those bins; None unless ``years`` predicts ages in years only,
    some labelled in years (an age labelled as a bin is measured by it already), and ``bins`` as bins only. An age
    in no bin (a gap between them) gets none."""
    predicted_bin = pl.col("pred_age_low").is_not_null() & pl.col("pred_age_high").is_not_null()
    labelled = (pl.col("pred_age").is_not_null() & pl.col("true_age").is_not_null()).any()
    only_years = years.select(labelled & ~predicted_bin.any()).item()
    only_bins = bins["pred_age"].is_null().all() and bins.select(predicted_bin.any()).item()
    if not (only_years and only_bins):
        return None
    ends = bins.filter(predicted_bin).select("pred_age_low", "pred_age_high").unique().sort(pl.all())
    scheme = [(int(low), int(high)) for low, high in ends.iter_rows()]
    rounded = (pl.col("pred_age").cast(pl.Float64) + 0.5).floor()
    inside = [rounded.is_between(low, high) for low, high in scheme]
    low = pl.coalesce(*(pl.when(hit).then(pl.lit(low)) for hit, (low, _) in zip(inside, scheme, strict=True)))
    high = pl.coalesce(*(pl.when(hit).then(pl.lit(high)) for hit, (_, high) in zip(inside, scheme, strict=True)))
    binned = years.with_columns(
        low.cast(PREDICTION_FIELDS["pred_age_low"]).alias("pred_age_low"),
        high.cast(PREDICTION_FIELDS["pred_age_high"]).alias("pred_age_high"),
    )
    return binned, scheme


def bin_names(scheme: list[tuple[int, int]]) -> list[str]:
    """The bins as FairFace writes them: "20-29", and "70+" for one open to the oldest age."""
    return [f"{low}+" if high >= MAX_AGE else f"{low}-{high}" for low, high in scheme]
