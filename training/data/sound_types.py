"""What kind of body sound a recording is, read from its dataset and metadata (never from the audio).

These are the labels the bundle's sound-type classifier learns (``SOUND_TYPES`` of the bundle contract);
recordings that are none of them come from :mod:`training.data.synthetic`. HLS-CMDS mixtures hold a heart
and a lung sound at once, so they have no single type and are left out.
"""

from __future__ import annotations

from acula.service.bundle import SoundType
from acula.training.data.records import Recording

HEART_DATASETS = ("physionet2016", "bmd_hs", "circor2022")
LUNG_DATASETS = ("sprsound", "icbhi2017")


def sound_type(record: Recording) -> SoundType | None:
    """``heart``, ``lung``, ``cough`` or ``breathing``; None when the recording is none of them or mixed."""
    if record.dataset in HEART_DATASETS:
        return "heart"
    if record.dataset in LUNG_DATASETS:
        return "lung"
    if record.dataset == "hls_cmds":
        component = record.labels.get("component")
        return component if component in ("heart", "lung") else None  # type: ignore[return-value]
    if record.dataset == "coswara":
        sound = str(record.labels.get("sound_type") or "")
        if sound.startswith("cough"):
            return "cough"
        if sound.startswith("breathing"):
            return "breathing"
    return None
