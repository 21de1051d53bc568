"""The text side of a bundle: frozen teacher + the aligned model's text projection, as one ONNX graph.

With it the service embeds free text into the joint space without torch: search the report index by a
query, score zero-shot class descriptions. The graph is ``input_ids, attention_mask (batch, tokens)`` ->
``joint (batch, J)``: transformer, attention-masked mean pooling, L2 normalisation (what the
sentence-transformers teacher does), then ``text_head``. The tokenizer travels as the teacher's own
``tokenizer.json``, read by the Rust ``tokenizers`` package.

MiniLM in float32 is about 90 MB, over the 50 MB budget of a committed bundle, so the graph is quantised to
int8 weights (dynamic, per-channel, about 23 MB). Quantisation moves the vectors slightly: the agreement with
torch (cosine similarity on real report texts) is measured here and written into the manifest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from acula.service.bundle import TextSideSpec
from acula.training.export.onnx import ExportError

if TYPE_CHECKING:
    from acula.training.nets.heads import JointProjection
    from acula.training.teacher import Teacher

MIN_COSINE = 0.98  # the quantised text encoder must agree with torch at least this well on real texts


class _TextToJoint(nn.Module):
    """``(B, L)`` ids and mask -> ``(B, J)`` joint: the teacher's pooling, then the text projection."""

    def __init__(self, transformer: nn.Module, text_head: JointProjection, normalize: bool) -> None:
        super().__init__()
        self.transformer = transformer
        self.text_head = text_head
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, L, H) -> (B, H)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return self.text_head(pooled)  # (B, H) -> (B, J), unit length


@dataclass(frozen=True)
class TextExport:
    spec: TextSideSpec
    min_cosine: float
    size_bytes: int


def export_text_side(
    teacher: Teacher,
    text_head: JointProjection,
    out_dir: Path,
    sample_texts: list[str],
    quantise: bool = True,
) -> TextExport:
    """Write ``text_encoder.onnx`` and ``tokenizer.json`` into ``out_dir``; check them on ``sample_texts``.

    ``teacher`` is a :class:`training.teacher.Teacher` with mean pooling (sentence-transformers or an
    encoder HF model); decoder teachers (last-token pooling) are refused.
    """
    pooling = getattr(teacher, "pooling", None)
    if pooling not in ("sentence-transformers", "mean"):
        raise ExportError(f"text side export supports mean-pooled teachers, not {pooling!r}")
    tokenizer_file = Path(teacher.path) / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ExportError(f"{tokenizer_file} not found: the text side needs the fast tokenizer file")
    out_dir = Path(out_dir)
    module = _TextToJoint(teacher.transformer, text_head, teacher.spec.normalize).eval()
    fp32 = out_dir / "text_encoder.fp32.onnx"
    final = out_dir / "text_encoder.onnx"
    # Two texts of different lengths, so the traced graph contains the padding-mask path, not a shortcut.
    example = teacher.tokenizer(
        ["a short report", "a longer example report, with more words in it"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example["input_ids"], example["attention_mask"]),
            str(fp32),
            dynamo=False,  # the TorchScript exporter handles HF BERT graphs with dynamic axes reliably
            opset_version=18,
            input_names=["input_ids", "attention_mask"],
            output_names=["joint"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
            },
        )
    if quantise:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel int8 with the reduced range measured best (cosine >= 0.995 to torch on report texts).
        quantize_dynamic(
            str(fp32), str(final), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )
        fp32.unlink()
    else:
        fp32.replace(final)
    shutil.copyfile(tokenizer_file, out_dir / "tokenizer.json")
    spec = TextSideSpec(max_tokens=int(teacher.spec.max_tokens))
    cosine = text_side_agreement(module, teacher, out_dir, spec, sample_texts)
    if cosine < MIN_COSINE:
        raise ExportError(f"text encoder ONNX agrees with torch only to cosine {cosine:.4f} < {MIN_COSINE}")
    return TextExport(spec=spec, min_cosine=cosine, size_bytes=final.stat().st_size)


def text_side_agreement(
    module: _TextToJoint, teacher: Teacher, out_dir: Path, spec: TextSideSpec, texts: list[str]
) -> float:
    """Lowest cosine similarity between torch and the service's own text path (tokenizers + onnxruntime)."""
    from acula.service.bundle import TensorSpec
    from acula.service.text import TextEncoder

    joint_dim = module.text_head.linear.out_features
    encoder = TextEncoder(out_dir, spec, TensorSpec(name="joint", shape=["batch", joint_dim]))
    worst = 1.0
    for text in texts:
        batch = teacher.tokenizer([text], truncation=True, max_length=spec.max_tokens, return_tensors="pt")
        with torch.no_grad():
            want = module(batch["input_ids"], batch["attention_mask"])[0].numpy()
        got = encoder.embed(text)
        worst = min(worst, float(np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want))))
    return worst
