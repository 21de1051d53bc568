"""Training stages: ``ssl.run_ssl`` (masked spectrogram pretraining) and ``align.run_align`` (AcuLa
alignment to a frozen text teacher), sharing ``loop.train`` (checkpoints, resume, AMP/DDP, metrics) and
``config`` (one pydantic-validated TOML file per run)."""
