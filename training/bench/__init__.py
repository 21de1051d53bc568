"""The benchmark behind ``acula bench``: frozen features, probes, retrieval and zero-shot on real tasks.

tasks.py (registry and subject-level splits) -> features.py / opensmile_features.py (one cached feature table
per row) -> ../probes.py (the linear probe, which export ships too) and opera.py -> evaluate.py (one task,
one row) -> retrieval.py (joint space) -> plots.py and report.py (figures, results.json, results.md);
runner.py ties them together.
"""
