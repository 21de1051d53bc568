"""Multi-process training: the tiny configuration under ``torchrun --nproc_per_node 2`` on CPU (gloo).

Both ranks must end with the same model. The loop checks that itself (every rank's parameter and buffer
checksum is gathered at the end and a divergence is an error), and records the checksums in ``final.pt``,
so this test reads them back: two entries, equal, and equal to the checksum of the saved model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acula.training.nets.factory import load_checkpoint, read_checkpoint
from acula.training.train.loop import state_checksum

TINY_SSL = """
name = "ssl-ddp"
out_dir = "{out}"
epochs = 1
max_steps = 4
device = "cpu"
progress = false
log_every = 1

[data]
root = "{root}"
datasets = ["sprsound"]
cache_dir = "{cache}"
batch_size = 4
max_recordings = 32

[optim]
lr = 3e-3
warmup_steps = 1

[model.audio]
window_seconds = 1.0

[model.frontend]
sample_rate = 8000
n_fft = 256
hop_length = 128
n_mels = 32

[model]
embedding_dim = 32
joint_dim = 32
decoder_hidden = 16

[model.cnn]
channels = [8, 16, 32]
freq_pool = [true, true, false]
"""


@pytest.mark.slow
def test_two_cpu_processes_train_one_model(shared_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssl.toml"
    out = tmp_path / "run"
    config.write_text(TINY_SSL.format(out=out, root=shared_data, cache=tmp_path / "cache"))
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "acula"]
    command += ["train", "ssl", "--config", str(config)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    payload = read_checkpoint(out / "final.pt")
    checksums = payload["replica_checksums"]
    assert len(checksums) == 2, checksums
    assert checksums[0] == checksums[1]
    assert payload["step"] == 4
    torch.manual_seed(0)
    assert state_checksum(load_checkpoint(out / "final.pt")) == checksums[0]
