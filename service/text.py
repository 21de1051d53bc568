"""The optional text side of a bundle: tokenizer + ONNX text encoder into the joint space, without torch.

With it the service can search reports by free text. The tokenizer is a Hugging Face ``tokenizer.json`` read
by the ``tokenizers`` package (Rust, no torch), imported only when a bundle has a text side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acula.service.bundle import BundleError, TensorSpec, TextSideSpec
from acula.service.core.errors import InvalidQuery
from acula.service.core.windowing import l2_normalise


class TextEncoder:
    """Free text -> one L2-normalised joint-space vector."""

    def __init__(self, bundle_dir: Path, spec: TextSideSpec, joint: TensorSpec, threads: int = 1) -> None:
        import onnxruntime as ort

        try:
            from tokenizers import Tokenizer
        except (
            ImportError
        ) as exc:  # the bundle needs it, the install lacks it: say so at load, not per request
            raise BundleError(
                "this bundle has a text side; install the 'tokenizers' package", spec.file
            ) from exc
        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(Path(bundle_dir) / spec.tokenizer_file))
        self.tokenizer.enable_truncation(spec.max_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(Path(bundle_dir) / spec.file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {item.name for item in self.session.get_inputs()}
        outputs = {item.name for item in self.session.get_outputs()}
        if spec.input_ids not in self.inputs or spec.output not in outputs:
            raise BundleError(
                f"{spec.file}: expected input {spec.input_ids!r} and output {spec.output!r}, "
                f"found inputs {sorted(self.inputs)} and outputs {sorted(outputs)}",
                file=spec.file,
            )
        self.dim = joint.shape[-1]
        probe = self.embed("probe")
        if isinstance(self.dim, int) and probe.shape != (self.dim,):
            raise BundleError(
                f"{spec.file}: output has {probe.shape[0]} dimensions, the joint space {self.dim}",
                file=spec.file,
            )

    def embed(self, text: str) -> np.ndarray:
        """One unit vector; raises InvalidQuery for text that yields no tokens or no direction."""
        encoding = self.tokenizer.encode(text)
        if not encoding.ids:
            raise InvalidQuery("the query has no tokens")
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {self.spec.input_ids: ids}
        if self.spec.attention_mask in self.inputs:
            feeds[self.spec.attention_mask] = np.asarray([encoding.attention_mask], dtype=np.int64)
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        vector = np.asarray(self.session.run([self.spec.output], feeds)[0], dtype=np.float32).reshape(-1)
        if not np.isfinite(vector).all() or not np.any(vector):
            raise InvalidQuery("the query does not map to a direction in the joint space")
        return l2_normalise(vector)
