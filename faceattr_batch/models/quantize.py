"""int8 ONNX: onnxruntime's static quantization of an exported attribute model (QDQ format, int8 weights per output
channel in a 7-bit range, uint8 activations), calibrated on real chips with the percentile method (activation
ranges cut at the 99.999th percentile). Only the network up to its heads' logits is quantized (``split_at_heads``).
On the fast model's 1,890 validation faces (``benchmarks/bench_int8.py``) percentile moved gender by 0.00 points,
race by -0.27 and MAE by -0.002 years. Earlier, with the tail quantized too: percentile -0.05 / -0.16 / -0.016,
its ages 5x further from fp32's; min-max moved race by -0.37 (512 chips) or -0.22 (2,048), entropy by -0.37,
convolutions only -0.27.

Weights use 7 of their 8 bits (``reduce_range``) because onnxruntime's u8 x s8 kernel on x86 CPUs without VNNI (AVX2
alone) adds pairs of products in 16 bits, which saturate: with full-range weights the default ensemble read the
1,890 validation faces at gender 86.4%, race 71.9%, MAE 6.70 there (fp32: 93.7 / 86.5 / 4.38), and right on VNNI
CPUs. With 7-bit weights: 94.2 / 86.3 / 4.38 on an AVX2 CPU (2026-12-05, ``benchmarks/bench_int8.py``).

On AVX-512 VNNI CPUs int8 ran the fast model 2.8x faster than fp32 (656 against 232 images/s, model alone,
in the same run). The quantized file keeps the fp32 file's metadata, its ``source_sha256`` included, so
``predict`` uses it beside its ``.pt`` as it would the fp32 export (``models.runtime``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceattr_batch.data.decode import DecodeError, load_chip
from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import replacing
from faceattr_batch.models.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    QUANTIZATION,
    SEVEN_BIT_WEIGHTS,
    check_onnx_output,
    export_onnx,
)

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16


def calibration_chips(paths: Sequence[str], size: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` of ``paths`` (a seeded sample, sorted) as uint8 N x 3 x S x S, the graph's input; a sampled file
    that does not decode is left out (logged), none decoding is an error."""
    if not paths:
        raise FaceattrError("int8 calibration needs images: the calibration source holds none")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(paths), min(count, len(paths)), replace=False))
    chips, skipped = [], {}
    for i in picked:
        try:
            chips.append(load_chip(paths[i], size))
        except DecodeError as err:
            skipped[paths[i]] = str(err)
    if skipped:
        first = next(iter(skipped.items()))
        log.warning("int8 calibration: %d of %d sampled images left out (%s: %s)", len(skipped), len(picked), *first)
    if not chips:
        raise FaceattrError(f"int8 calibration: none of the {len(picked)} sampled images decodes ({': '.join(first)})")
    return np.stack(chips).transpose(0, 3, 1, 2).copy()


def calibration_batches(chips: np.ndarray) -> list[np.ndarray]:
    """``chips`` in batches of one size, the largest up to ``CALIBRATION_BATCH`` that divides them: onnxruntime's
    calibrator stacks the batches' outputs, so a batch of another size fails ("inhomogeneous shape": 300 chips as
    17s and 16s did). The histograms it gathers do not depend on the batching."""
    size = max(b for b in range(1, CALIBRATION_BATCH + 1) if len(chips) % b == 0)
    return np.split(chips, len(chips) // size)


def split_at_heads(prepared: Path, network: Path, tail: Path) -> None:
    """Cut the exported graph at its heads' logits (the ``Gemm`` outputs): ``network`` computes them from
    the pixels, ``tail`` the outputs from them (and the pixels' batch size). Only the network is quantized: the
    tail (mirror and member averages, temperatures, softmaxes, age quantiles) costs nothing beside it, uint8
    rounding of the age distribution moved ages by 0.46 years on average (0.12 in float: MODEL_CARD), and the
    calibrator cannot bin its narrow ranges."""
    import onnx

    whole = onnx.load(str(prepared))
    logits = [name for node in whole.graph.node if node.op_type == "Gemm" for name in node.output]
    onnx.utils.extract_model(str(prepared), str(network), [INPUT_NAME], logits)
    cut = onnx.load(str(network))
    cut.metadata_props.extend(whole.metadata_props)  # quant_pre_process's mark, which quantize_static checks
    onnx.save(cut, str(network))
    onnx.utils.extract_model(str(prepared), str(tail), [INPUT_NAME, *logits], list(OUTPUT_NAMES))


def with_float_tail(int8: Path, tail: Path):
    """The quantized network with the float tail appended: one graph from the pixels to the outputs."""
    import onnx

    proto, rest = onnx.load(str(int8)), onnx.load(str(tail)).graph
    made = {name for node in proto.graph.node for name in node.output}
    proto.graph.node.extend(node for node in rest.node if not made.issuperset(node.output))  # shape math both have
    for ours, theirs in ((proto.graph.initializer, rest.initializer), (proto.graph.value_info, rest.value_info)):
        have = {entry.name for entry in ours}
        ours.extend(entry for entry in theirs if entry.name not in have)  # constants both halves use
    del proto.graph.output[:]
    proto.graph.output.extend(rest.output)
    used = {name for node in proto.graph.node for name in node.input}
    kept = [entry for entry in proto.graph.initializer if entry.name in used]  # onnxruntime warns of the others
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    onnx.checker.check_model(proto)
    return proto


def default_chips(exported) -> int:
    """512 calibration chips for one network, 128 for an ensemble: the calibrator holds every node's activations for
    all the chips, about 60 MB a chip for the shipped three-network ensemble (512 ran a 24 GB machine out of memory,
    killed without a word); the shipped int8 files were calibrated so."""
    config = json.loads(next(p.value for p in exported.metadata_props if p.key == "config"))
    return 128 if config.get("backbone") == "ensemble" else 512


def quantize_onnx(
    source: str | Path | None, out: Path, images: Sequence[str], count: int | None = None, opset: int = 17
):
    """Export ``source`` (an attribute model, as ``export_onnx`` takes it) and write its int8 graph to ``out``
    atomically, calibrated on ``count`` of ``images`` (``calibration_chips``; None: ``default_chips``). Returns a
    summary dict."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Chips(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches(calibration))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    out = Path(out)
    check_onnx_output(out)
    with tempfile.TemporaryDirectory(prefix="faceattr-int8-") as folder:
        fp32, prepared, network, tail, int8 = (
            Path(folder) / f"{name}.onnx" for name in ("fp32", "prepared", "network", "tail", "int8")
        )
        summary = export_onnx(source, fp32, opset)
        if count is None:
            count = default_chips(onnx.load(str(fp32), load_external_data=False))
        calibration = calibration_chips(images, summary["input_size"], count)
        try:  # onnxruntime's calibrator prints its steps on stdout, which is the command's own
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(fp32), str(prepared))
                split_at_heads(prepared, network, tail)
                quantize_static(
                    str(network),
                    str(int8),
                    Chips(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile,
                    reduce_range=True,
                )
            proto = with_float_tail(int8, tail)
        except Exception as err:  # onnxruntime's tools raise plain Exceptions of many kinds
            raise FaceattrError(f"int8 quantization failed: {first_line(err, 200)}") from None
        described = (
            f"int8 static QDQ, per-channel {SEVEN_BIT_WEIGHTS}, {len(calibration)} calibration chips (percentile)"
        )
        del proto.metadata_props[:]
        proto.metadata_props.extend(onnx.load(str(fp32)).metadata_props)
        proto.metadata_props.add(key=QUANTIZATION, value=described)
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as tmp:
            onnx.save(proto, str(tmp))
    return {**summary, "path": str(out), "quantization": described}
