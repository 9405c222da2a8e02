"""`faceattr-batch export-onnx`: the attribute model as ONNX, calibrated outputs and all.

The graph takes the same uint8 N x 3 x S x S chips that ``decode.load_chip`` makes (the float scaling,
test-time mirror and temperatures are inside), so an ONNX user needs only the preprocessing written into the
model's metadata.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from faceattr_batch import __version__
from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import check_writable, replacing
from faceattr_batch.io.digest import file_sha256
from faceattr_batch.models.registry import load_attr_model

OUTPUT_NAMES = ("p_female", "race_probs", "age_median", "age_low", "age_high")
SOURCE_DIGEST = "source_sha256"  # of the checkpoint the graph was exported from (predict reuses a matching export)
EXPORTED_BY = "faceattr_batch.version"  # the tool version that exported the graph
QUANTIZATION = "quantization"  # how an int8 graph was quantized (models.quantize); absent in an fp32 export
SEVEN_BIT_WEIGHTS = "7-bit weights"  # in QUANTIZATION's text since 2026-12-05; earlier int8 files saturate
INPUT_NAME = "pixels"


def preprocessing_text(input_size: int) -> str:
    return (
        f"RGB uint8, N x 3 x {input_size} x {input_size} (NCHW). Decode with EXIF orientation applied, take the "
        f"centred square, resize to {input_size} x {input_size} with an antialiased bilinear filter "
        "(faceattr_batch.data.decode.load_chip). Float scaling is inside the graph."
    )


def check_onnx_output(out: Path | str) -> None:
    """Before any work: an export is named ``.onnx`` (``predict -m`` tells an ONNX model by its suffix, and so no
    checkpoint, the export's own source among them, is ever replaced by one), where it can be written (an int8
    export calibrates for minutes first)."""
    if Path(out).suffix.lower() != ".onnx":
        raise FaceattrError(f"-o {out}: name the ONNX file .onnx (predict -m tells an ONNX model by its suffix)")
    check_writable(out, "-o")


def export_onnx(source: str | Path | None, out: Path, opset: int = 17) -> dict:
    """Write ``out`` (named ``.onnx``) atomically and return a summary (path, input size, opset, source)."""
    import onnx  # heavy, and only export needs it

    check_onnx_output(out)
    if source is not None and Path(source).suffix.lower() == ".onnx":
        raise FaceattrError(f"-m {source}: already an ONNX model; export-onnx reads a .pt model or a RUN_DIR")
    model, meta = load_attr_model(source)
    size = model.config.input_size

    class Calibrated(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            return tuple(self.net.infer(pixels))

    wrapper = Calibrated(model).eval()
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(out) as tmp:
            # The TorchScript-based exporter needs no onnxscript; its deprecation notice is not the user's concern.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
                    opset_version=opset,
                    dynamo=False,
                )
            proto = onnx.load(str(tmp))
            properties = {
                EXPORTED_BY: __version__,
                "model_name": str(meta.get("name", "faceattr-attr")),
                SOURCE_DIGEST: file_sha256(meta["source"]),
                "config": json.dumps(model.config.to_dict()),
                "preprocessing": preprocessing_text(size),
                "outputs": "p_female: P(female); race_probs: softmax over races; age_median: median age (years); "
                "age_low/age_high: 10th/90th percentile of the age distribution",
                "genders": json.dumps(GENDERS),
                "races": json.dumps(RACES),
                "age_bands": json.dumps(AGE_BAND_NAMES),
            }
            for key, value in properties.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    except (OSError, RuntimeError, onnx.checker.ValidationError) as err:
        raise FaceattrError(f"ONNX export to {out} failed: {str(err).splitlines()[0][:200]}") from None
    return {"path": str(out), "input_size": size, "opset": opset, "source": meta["source"]}
