"""The Python API: a verified bundle behind four calls, answering with the HTTP API's own response models.

    import acula
    model = acula.load("models/acula-default")
    model.predict("recording.wav").tasks          # what POST /predict returns: the probes that apply
    model.predict("recording.wav", sound_type="lung", age_group="paediatric")   # stated, not guessed
    model.predict_fhir("recording.wav")           # the same answer as a FHIR R4B Bundle (JSON text)
    model.embed("recording.wav").embedding        # what POST /embed returns
    model.similar_reports("recording.wav", k=5)   # what POST /similar-reports returns
    model.similar_reports("expiratory wheeze", k=5)

``acula predict`` and ``acula embed`` are this API on the command line; the service runs the same
:class:`~acula.service.core.pipeline.InferencePipeline` behind its batcher and builds the same responses, so
the three cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acula.service.api.schemas import (
    EmbedResponse,
    PredictResponse,
    SimilarReportsResponse,
    embed_response,
    predict_response,
    similar_reports_response,
)
from acula.service.core.applicability import ClientContext
from acula.service.core.pipeline import InferencePipeline
from acula.service.fhir import fhir_bundle
from acula.service.settings import Settings

Source = bytes | str | Path


class AculaModel:
    """A loaded bundle; build it with :func:`load`. Thread-safe: onnxruntime sessions may be shared."""

    def __init__(self, pipeline: InferencePipeline) -> None:
        self.pipeline = pipeline
        self.manifest = pipeline.manifest

    @classmethod
    def load(cls, bundle: str | Path | None = None, **settings: Any) -> AculaModel:
        """Verify every file of ``bundle`` and open it. ``settings`` are :class:`Settings` fields
        (``provider="cpu"``, ``intra_op_threads=2``...); unset ones come from ``ACULA_*`` or the defaults."""
        if bundle is not None:
            settings["bundle"] = Path(bundle)
        return cls(InferencePipeline.from_settings(Settings(**settings)))

    def predict(
        self,
        source: Source,
        tasks: list[str] | None = None,
        top_k: int = 0,
        per_window: bool = False,
        sound_type: str | None = None,
        age_group: str | None = None,
        site: str | None = None,
    ) -> PredictResponse:
        """The probes that apply to one recording (a path or the file's bytes), as ``POST /predict``.

        ``sound_type`` (heart, lung, cough, breathing), ``age_group`` (paediatric, adult) and ``site`` are
        what you know about the recording; without ``sound_type`` the model's own is used. Raises
        :class:`~acula.service.core.errors.NotAuscultation` for an upload the model is confident is not an
        auscultation sound, like the service's 422.
        """
        context = ClientContext.parse(sound_type, age_group, site)
        prediction = self.pipeline.predict(
            source, tasks=tasks, top_k=top_k, per_window=per_window, context=context
        )
        return predict_response(self.manifest, prediction)

    def predict_fhir(self, source: Source, **options: Any) -> str:
        """:meth:`predict` as a FHIR R4B Bundle (JSON text), as ``/predict`` with
        ``Accept: application/fhir+json``; ``options`` are :meth:`predict`'s."""
        return fhir_bundle(self.predict(source, **options))

    def embed(self, source: Source) -> EmbedResponse:
        """The pooled embedding (probe input) and the L2-normalised joint embedding of one recording."""
        return embed_response(self.manifest, self.pipeline.embed(source))

    def similar_reports(self, query: Source, k: int = 5) -> SimilarReportsResponse:
        """The ``k`` training-side reports closest to a recording (path or bytes) or to a free-text query.

        A ``str`` that names an existing file is a recording; any other ``str`` is text.
        """
        if isinstance(query, str) and not Path(query).is_file():
            hits = self.pipeline.search_text(query, k)
            return similar_reports_response(self.manifest, "text", hits, {})
        prediction = self.pipeline.run(query, None, top_k=k)  # no probe: any recording may be searched with
        return similar_reports_response(
            self.manifest, "audio", prediction.reports or [], prediction.timings_ms
        )


def load(bundle: str | Path | None = None, **settings: Any) -> AculaModel:
    """Open a model bundle: ``acula.load("models/acula-default")``. See :class:`AculaModel`."""
    return AculaModel.load(bundle, **settings)
