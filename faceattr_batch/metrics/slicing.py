"""Slices of one's own: columns of the frame (a labels file's ``source``, ``skin_tone``, ``brightness``) as
slicing attributes beside the built-in race, gender and age band (``attributes.SLICE_BY``).

A spec is ``name`` (the column's values are the groups) or ``name:k`` (a numeric column cut into ``k`` quantile
bins: ``quantile_bins``). ``slice_frame`` puts the bins in place of the column,
as an Enum whose labels say the bins' ranges in order (``[0.1, 0.3]``, ``(0.3, 0.5]``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from faceattr_batch.errors import FaceattrError
from faceattr_batch.metrics.attributes import SLICE_BY
from faceattr_batch.schema import AGE_BIN_FIELDS

MAX_GROUPS = 50  # an unbinned column with more values is refused: bin it (name:k) or slice by a coarser one


@dataclass(frozen=True)
class SliceSpec:
    name: str  # the column, and the attribute's name in the report (by_<name>)
    bins: int | None = None  # quantile bins of a numeric column; None: its values are the groups


def parse_slice_spec(spec: str) -> SliceSpec:
    """``"source"`` -> SliceSpec("source"); ``"brightness:4"`` -> SliceSpec("brightness", 4) (quartiles)."""
    head, sep, bins = spec.strip().rpartition(":")
    name = (head if sep else bins).strip()
    if not name:
        raise FaceattrError(f"--slice-by {spec!r}: no column name (write name or name:k, e.g. brightness:4)")
    if not sep:
        return SliceSpec(name)
    if not bins.strip().isdigit() or int(bins) < 2:
        raise FaceattrError(f"--slice-by {spec!r}: the bins after ':' must be a whole number of at least 2")
    return SliceSpec(name, int(bins))


def parse_slice_by(specs: Sequence[str]) -> list[SliceSpec]:
    """Every spec parsed, the built-in attributes (race, gender, age_band) left out, a column named twice refused."""
    parsed = [parse_slice_spec(spec) for spec in specs if spec.strip()]
    for spec in parsed:
        if spec.name in SLICE_BY and spec.bins is not None:
            raise FaceattrError(f"--slice-by {spec.name}:{spec.bins}: {spec.name} is built in and takes no bins")
    extra = [spec for spec in parsed if spec.name not in SLICE_BY]
    names = [spec.name for spec in extra]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise FaceattrError(f"--slice-by names {', '.join(twice)} more than once")
    return extra


def slice_frame(frame: pl.DataFrame, specs: Sequence[str], known: Sequence[str] = ()) -> tuple[pl.DataFrame, list]:
    """``frame`` with each binned column replaced by its bins (a text column's empty values by null: no group), and
    the extra specs (``parse_slice_by``). A column
    that is missing, binned but not numeric, or unbinned with more than ``MAX_GROUPS`` values is refused in one
    line (``known``: the columns a user could have meant, listed when a name is missing)."""
    extra = parse_slice_by(specs)
    for spec in extra:
        if spec.name not in frame.columns:
            choices = ", ".join(c for c in known if c not in AGE_BIN_FIELDS) or "none (beyond path and the labels)"
            raise FaceattrError(f"--slice-by {spec.name}: no such column; the labels' columns are: {choices}")
        column = frame.get_column(spec.name)
        if column.dtype == pl.String:  # an empty cell is no value (a CSV's empty field can read as "")
            column = column.str.strip_chars().replace("", None)
            frame = frame.with_columns(column)
        elif column.dtype.is_float():  # a CSV's NaN is no value either: no group, and not the top bin
            column = column.fill_nan(None)
            frame = frame.with_columns(column)
        if spec.bins is not None:
            if not column.dtype.is_numeric():
                raise FaceattrError(
                    f"--slice-by {spec.name}:{spec.bins}: bins need a numeric column; {spec.name} is {column.dtype}"
                )
            frame = frame.with_columns(quantile_bins(column, spec.bins))
        elif (groups := column.drop_nulls().n_unique()) > MAX_GROUPS:
            raise FaceattrError(
                f"--slice-by {spec.name}: {groups} distinct values (at most {MAX_GROUPS}); "
                f"bin a numeric column into quantiles with {spec.name}:4"
            )
    return frame, extra


def quantile_bins(column: pl.Series, k: int) -> pl.Series:
    """``column`` cut into ``k`` quantile bins, right-closed at the quantiles i/k (linear interpolation; tied
    quantiles merge bins), as an Enum of the bins' ranges in order: ``[min, q1]``, ``(q1, q2]``, ..., ``(q_k-1,
    max]``; null stays null. (polars' ``qcut`` does this but is deprecated in polars 2.1, its successor
    ``bin_quantiles`` experimental.)"""
    known = column.drop_nulls().cast(pl.Float64)
    if known.is_empty():
        return pl.Series(column.name, [None] * column.len(), dtype=pl.Enum([]))
    lowest, highest = known.min(), known.max()
    breaks = sorted({known.quantile(i / k, interpolation="linear") for i in range(1, k)} - {highest})
    edges = [lowest, *breaks, highest]
    for digits in (4, 6, 9, 17):  # as few digits as keep the labels apart
        labels = [f"[{edges[0]:.{digits}g}, {edges[1]:.{digits}g}]"]
        labels += [f"({low:.{digits}g}, {high:.{digits}g}]" for low, high in zip(edges[1:-1], edges[2:], strict=True)]
        if len(set(labels)) == len(labels):
            break
    index = np.searchsorted(np.asarray(breaks), column.cast(pl.Float64).fill_null(np.nan).to_numpy(), side="left")
    bins = pl.Series(column.name, np.asarray(labels, dtype=object)[index], dtype=pl.String)
    return bins.set(column.is_null(), None).cast(pl.Enum(labels))
