"""Test doubles for the encoder backend, a bundle whose encoder answers NaN, and the server with a double.

The production backend has no test hook: a test that needs the engine to fail (or to answer NaN) while a real
server runs wraps the real encoder in :class:`SwitchableEncoder`, which implements the same protocol
(:class:`acula.service.backends.onnx.EncoderBackend`) and is switched from outside the server process by
files. ``python -m tests.support.doubles --bundle B --host H --port P --fault-file F --nan-file G`` serves the
real app, with its real settings, logging and shutdown, around that double (``serve(argv=DOUBLES_ARGV)`` in
:mod:`tests.support.server`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from acula.service.backends.onnx import EncoderBackend
from acula.service.core.errors import EngineError

DOUBLES_ARGV = ("-m", "tests.support.doubles")


class SwitchableEncoder:
    """The real encoder, except: while ``fault_file`` exists every run raises :class:`EngineError` (what the
    real backend raises when onnxruntime fails), and while ``nan_file`` exists every output is NaN."""

    def __init__(self, inner: EncoderBackend, fault_file: Path | None, nan_file: Path | None) -> None:
        self.inner = inner
        self.fault_file = fault_file
        self.nan_file = nan_file

    @property
    def providers(self) -> list[str]:
        return self.inner.providers

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fault_file is not None and self.fault_file.exists():
            raise EngineError(f"the inference engine failed on a batch of {len(windows)} (test double)")
        embedding, joint = self.inner.run(windows)
        if self.nan_file is not None and self.nan_file.exists():
            return np.full_like(embedding, np.nan), np.full_like(joint, np.nan)
        return embedding, joint

    def warm_up(self, window_samples: int, max_batch_size: int) -> None:
        self.inner.warm_up(window_samples, max_batch_size)


def nan_encoder_bundle(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose encoder.onnx multiplies its embedding by NaN (for every input), hashed into
    its manifest like any other bundle: a broken export, loadable and verifiable."""
    import onnx
    from onnx import helper, numpy_helper

    from acula.service.bundle import read_manifest, write_manifest

    shutil.copytree(source, target)
    path = target / "encoder.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    producer = next(node for node in graph.node if "embedding" in node.output)
    producer.output[list(producer.output).index("embedding")] = "embedding_finite"
    graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "not_a_number"))
    graph.node.append(helper.make_node("Mul", ["embedding_finite", "not_a_number"], ["embedding"]))
    onnx.save(model, str(path))
    manifest = read_manifest(target)
    write_manifest(target, manifest, sorted(set(manifest.files) - set(manifest.named_files())))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-file", type=Path)
    parser.add_argument("--nan-file", type=Path)
    args = parser.parse_args(argv)

    from acula.service.app import create_app
    from acula.service.cli.serve import run
    from acula.service.core.pipeline import InferencePipeline
    from acula.service.logging import configure_logging
    from acula.service.settings import Settings

    settings = Settings(bundle=args.bundle, host=args.host, port=args.port)

    def load(settings: Settings) -> InferencePipeline:
        pipeline = InferencePipeline.from_settings(settings)
        pipeline.backend = SwitchableEncoder(pipeline.backend, args.fault_file, args.nan_file)
        return pipeline

    configure_logging(settings.log_level, settings.log_json)
    run(settings, create_app(settings, load))


if __name__ == "__main__":
    main()
