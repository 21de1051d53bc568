"""Benchmark features go through the service's own path, and the cache returns exactly what was computed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from acula.service.core.pipeline import InferencePipeline
from acula.training.bench.features import BundleEncoder, FeatureCache, recording_key


def test_feature_cache_round_trip(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "key", "test source")
    emb, joint = np.arange(4, dtype=np.float32), np.ones(3, dtype=np.float32)
    assert cache.get("ds/a/b", with_joint=True) is None
    cache.put("ds/a/b", emb, joint)
    got_emb, got_joint = cache.get("ds/a/b", with_joint=True)
    assert np.array_equal(got_emb, emb) and np.array_equal(got_joint, joint)
    assert not list(tmp_path.rglob("*.tmp*"))  # written atomically, nothing left behind


@pytest.mark.slow
def test_bundle_features_equal_the_service_pipeline(
    shared_data: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    """What ``acula bench`` measures for a bundle is what ``/embed`` returns for the same file."""
    from acula.training.data import load_records

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    records = [r for r in load_records(shared_data, datasets=["physionet2016"])][:4]
    encoder = BundleEncoder(bundle, threads=1)
    table = encoder.extract(records, tmp_path / "cache", progress=False)
    pipeline = InferencePipeline.from_bundle(bundle, provider="cpu")
    for rec in records:
        row = table.rows([recording_key(rec)])[0]
        served = pipeline.embed(rec.audio_path)
        assert np.allclose(table.embedding[row], served.embedding, atol=1e-5)
        assert np.allclose(table.joint[row], served.joint, atol=1e-5)
    again = encoder.extract(records, tmp_path / "cache", progress=False)  # from the cache this time
    assert np.array_equal(again.embedding, table.embedding)
