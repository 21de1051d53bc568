"""``MODEL_CARD.md``: what a bundle is for, what it was trained on, how well it does, and where it fails.

Written from the manifest (so the numbers are the ones the bundle ships with, never retyped) plus export
notes such as the parity error and the benchmark table. The limitations section is fixed text on purpose:
those limits come from the data, not from a particular run, and must not be dropped by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from acula.service.bundle import Calibration, Manifest, OutOfDistributionSpec, ProbeDomain, SoundTypeSpec

LIMITATIONS = """\
- **Not a diagnostic device.** Outputs are research signals for decision support; a clinician decides.
- **Paediatric lung data.** Nearly all lung sounds with adventitious-sound labels come from SPRSound
  (children in one Shanghai hospital, one electronic stethoscope). Adult lung sounds are scarce
  (31 ICBHI recordings), so lung findings in adults are out of distribution. The sound-type gate has a
  wider blind spot: lung recordings from stethoscopes it never heard (ICBHI's, children's as well as
  adults') can be taken for heart or breathing sounds, confidently and without the out-of-distribution
  flag, because each sound type was learnt from few sources (see its unseen-source accuracy above): state
  `sound_type` for recordings from a device or population outside the data table.
- **Manikin data.** HLS-CMDS is recorded from a clinical simulation manikin: useful for sanity checks and
  report templates, not clinical evidence; its probe numbers say nothing about patients.
- **2 kHz PhysioNet audio.** PhysioNet 2016 recordings are stored at 2 kHz (cut to 10 s here); upsampled to
  the model rate they carry nothing above 1 kHz, so the model may lean on band-limited cues for heart sounds.
- **General-domain text teacher.** Reports are embedded by all-MiniLM-L6-v2, a general sentence encoder,
  not a clinical one: clinical synonyms and negations may be embedded poorly, which limits the joint space.
- **Template reports.** Report texts are written from dataset metadata, not by clinicians listening to the
  recordings; they describe labels, not what is audible in each window.
- **Small, imbalanced test sets.** Several tasks have few subjects per class; metrics have wide confidence
  intervals and may not transfer across devices, sites or populations.
"""


def _domain(domain: ProbeDomain) -> str:
    if not domain.known:
        return "unknown"
    return f"{'/'.join(domain.sound_types)}, {domain.population}, {domain.dataset}, {domain.conditions}"


def _calibration(calibration: Calibration | None) -> str:
    if calibration is None:
        return "not calibrated"
    temperature = ", ".join(f"{t:.2f}" for t in calibration.temperature)
    shift = ", ".join(f"{s:+.2f}" for s in calibration.shift)
    scaled = f"T {temperature}" + (f", shift {shift}" if shift else "")
    return f"{scaled}; ECE {calibration.ece_before:.3f} -> {calibration.ece_after:.3f}"


def _metrics_table(manifest: Manifest) -> str:
    if not manifest.probes:
        return "No probes were trained.\n"
    lines = [
        "| task | purpose | domain | outputs | metrics on the held-out side | calibration | train / test |",
        "|---|---|---|---|---|---|---|",
    ]
    for probe in manifest.probes:
        metrics = {k: v for k, v in probe.metrics.items() if not k.startswith("n_")}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) or "n/a"
        counts = f"{int(probe.metrics.get('n_train', 0))} / {int(probe.metrics.get('n_test', 0))}"
        outputs = ", ".join(probe.labels) if probe.labels else f"value ({probe.unit or 'no unit'})"
        calibration = _calibration(probe.calibration)
        row = [probe.task, probe.purpose, _domain(probe.domain), outputs, shown, calibration, counts]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        "\nDomain: sound types, population, dataset and recording conditions of the probe's training side; "
        "the service answers a probe only for uploads inside it. Calibration: logits z become z / T + shift, "
        "with T and the shift fitted on out-of-fold logits of the training side, and the expected "
        "calibration error (10 equal-width bins) on the held-out side before and after it."
    )
    return "\n".join(lines) + "\n"


def _listed(metrics: dict[str, float], prefix: str, name: Callable[[str], str] = str) -> str:
    """``"<name> 0.987, ..."`` for the metrics ``<prefix><name>`` (per dataset, per band limit...)."""
    return ", ".join(
        f"{name(k.removeprefix(prefix))} {v:.3f}" for k, v in metrics.items() if k.startswith(prefix)
    )


def _sound_type_section(spec: SoundTypeSpec | None) -> str:
    if spec is None:
        return "## Sound type\nNo sound-type classifier: only a client-stated sound type gates the probes.\n"
    per_dataset = _listed(spec.metrics, "accuracy/")
    limited = _listed(spec.metrics, "band_limited_accuracy/", lambda hz: f"{int(hz) / 1000:g} kHz")
    limited_text = (
        f" The same held-out recordings band-limited as a stethoscope storing that rate would ({limited}); "
        "the classifier also trained on band-limited copies, so that bandwidth does not stand in for the "
        "sound type."
        if limited
        else ""
    )
    unseen = _listed(spec.metrics, "unseen_source_accuracy/")
    unseen_text = (
        f" Refitted without one source and asked about that source's recordings, it is right on {unseen}: "
        "it tells the sources it trained on apart better than it tells sound types apart, so on a "
        "stethoscope or population it never heard, state sound_type."
        if unseen
        else ""
    )
    header = "| true \\ predicted | " + " | ".join(spec.labels) + " |"
    lines = [header, "|---" * (len(spec.labels) + 1) + "|"]
    for name, row in zip(spec.labels, spec.confusion, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(n) for n in row) + " |")
    return (
        "## Sound type\n"
        f"A linear classifier over the same embedding says which sound an upload is "
        f"({', '.join(spec.labels)}); probes only answer uploads of their own sound types. Held-out accuracy "
        f"{spec.metrics.get('accuracy', float('nan')):.3f} (per dataset: {per_dataset}); "
        f"{_calibration(spec.calibration)}. Answers below probability {spec.min_probability:.2f} count as "
        f"unknown (held-out accuracy above it {spec.metrics.get('accuracy_above_min_probability', 0):.3f}, "
        f"covering {spec.metrics.get('coverage', 0):.1%} of the held-out recordings).{limited_text}"
        f"{unseen_text}\n"
        "Not-auscultation examples are generated (speech by espeak-ng, music-like tones, coloured noise, "
        "mains hum, clicks, near-silence), not recorded.\n\n"
        f"Confusion on {spec.confusion_source}:\n\n" + "\n".join(lines) + "\n"
    )


def _ood_section(spec: OutOfDistributionSpec | None) -> str:
    if spec is None:
        return "## Out-of-distribution flag\nNone: uploads are not compared with the training recordings.\n"
    rates = "\n".join(f"| {name} | {rate:.1%} |" for name, rate in spec.flag_rates.items())
    thresholds = ", ".join(f"{kind} {value:.4f}" for kind, value in spec.sound_type_thresholds.items())
    per_type = (
        "The same score against the reference recordings of one sound type only has a threshold per type "
        f"({thresholds}; the same quantile, of held-out recordings of that type): past the threshold of the "
        "type the classifier names, the model's sound type is not used and no probe answers unless the "
        "client states one (own_type/ rows: how often that fires on recordings of the right type). "
        if thresholds
        else ""
    )
    return (
        "## Out-of-distribution flag\n"
        f"An upload is flagged when its score (1 - mean cosine similarity to its {spec.k} nearest of "
        f"{spec.reference_count} whitened training-side embeddings) exceeds {spec.threshold:.4f}, the "
        f"{spec.quantile:g} quantile of the scores of training-side subjects held out of the reference. "
        f"{per_type}Share flagged per held-out set:\n\n| set | flagged |\n|---|---|\n" + rates + "\n"
    )


def _data_table(manifest: Manifest) -> str:
    lines = ["| dataset | training-side recordings | licence |", "|---|---|---|"]
    for item in manifest.provenance.datasets:
        lines.append(f"| {item.name} | {item.recordings} | {item.licence} |")
    return "\n".join(lines) + "\n"


def render_model_card(manifest: Manifest, notes: dict[str, Any]) -> str:
    audio = manifest.audio
    index = manifest.report_index
    index_text = "none"
    if index is not None:
        index_text = (
            f"{index.count} training-side reports ({index.text_source} text), FAISS `{index.kind}` "
            f"inner-product index of {index.dim}-d joint embeddings; de-identified: {index.deidentified}"
        )
        if index.recall_at_10_vs_exact is not None:
            index_text += f"; recall@10 against exact search {index.recall_at_10_vs_exact:.3f}"
    text_side = "none (audio-only bundle)"
    if manifest.text_side is not None:
        cosine = notes.get("text_side_min_cosine_vs_torch")
        text_side = (
            f"`{manifest.text_side.file}` (int8-quantised teacher + text projection), "
            f"min cosine vs torch {cosine}"
        )
    bench = _benchmark_section(notes.get("benchmark_markdown", ""))
    differences = notes.get("differences_from_default", "")
    parity = notes.get("parity_max_abs_diff")
    parity_text = f"{parity:.2e}" if isinstance(parity, float) else "n/a"
    rates = sorted({r["native_rate"] for r in notes.get("parity_recordings", []) if r.get("native_rate")})
    rates_text = f" (stored at {', '.join(f'{r / 1000:g}' for r in rates)} kHz)" if rates else ""
    tolerance = notes.get("parity_tolerance", 1e-4)
    if isinstance(tolerance, float) and tolerance > 1e-4:
        parity_text += f" (per output {notes.get('parity_per_output')}; tolerance raised to {tolerance:g})"
    return f"""# Model card: {manifest.name} {manifest.version}

## Intended use
An auscultation audio encoder (heart, lung, cough and breath sounds) whose embeddings are aligned with
clinical reports, with linear probes for the benchmark tasks below and a searchable index of de-identified
training reports. Intended for **research and clinical decision support**; it is **not a diagnostic device**,
is not cleared by any regulator, and must not be used to make or exclude a diagnosis on its own.

## How to use it
`acula serve --bundle models/{manifest.name}` or `acula predict --bundle models/{manifest.name} FILE`.
Audio is decoded to mono, resampled to {audio.sample_rate} Hz, cut into {audio.window_seconds:g} s windows
every {audio.hop_seconds:g} s (the last one zero-padded) and the window embeddings are {audio.pooling}-pooled.
Recordings shorter than {audio.min_seconds:g} s are refused.

## Training data and licences
Only the training side of each split was seen by self-supervised pre-training, alignment and the probes;
the metrics below come from the held-out side: unseen subjects, except SPRSound's official intra-patient
test set, which holds unseen recordings of training patients (its inter-patient set holds unseen patients).

{_data_table(manifest)}
## Metrics per task
{_metrics_table(manifest)}
{_sound_type_section(manifest.sound_type)}
{_ood_section(manifest.out_of_distribution)}
{bench}
## Limitations
{LIMITATIONS}
## How it was made
{_encoder_text(manifest)}
- Teacher: {manifest.provenance.teacher or "none"}.
- Export: ONNX opset {manifest.encoder.opset}; onnxruntime vs torch max absolute difference {parity_text} on
  real recordings{rates_text} of several lengths and batch sizes.
- Report index: {index_text}. Index vectors: {notes.get("index_vectors", "n/a")}.
- Text side: {text_side}.
- Project commit: `{manifest.provenance.project_commit}`; created {manifest.provenance.created}. The full run
  configs are in `manifest.json` under `provenance.training_config`.
{differences}"""


def _encoder_text(manifest: Manifest) -> str:
    """Where the encoder's weights come from: pretrained weights (named, with hash and licence) or SSL."""
    weights = manifest.provenance.pretrained
    aligned = (
        "aligned to a frozen text teacher's embeddings of reports written from each recording's metadata "
        "(the AcuLa method, arXiv 2512.04847)"
    )
    if weights is None:
        return (
            "- Encoder: log-mel front-end (inside the ONNX graph) and a CNN, pre-trained by "
            f"masked-spectrogram modelling, then {aligned}, with the masked-spectrogram loss kept."
        )
    return (
        f"- Encoder: log-mel front-end (inside the ONNX graph) and {weights.name}, post-trained: {aligned}.\n"
        f"- Pretrained weights: `{weights.file}`, SHA-256 `{weights.sha256}`, licence {weights.licence} "
        f"(texts in this bundle: {', '.join(f'`{name}`' for name in weights.licence_files)}). "
        f"Source: {weights.source}."
    )


def _benchmark_section(results_markdown: str) -> str:
    """``acula bench``'s results.md under the card's own ``## Benchmark`` heading (its headings one level
    down), with what each row is, so that a reader of the card alone can tell the baselines apart."""
    if not results_markdown.strip():
        return ""
    lines = results_markdown.splitlines()
    demoted = "\n".join("##" + line if line.startswith("#") else line for line in lines)
    return (
        "## Benchmark\n"
        "Rows: `aligned` is this bundle; `frozen-pretrained` (or `ssl-only`) the same encoder before "
        "alignment;\n`opensmile` the openSMILE eGeMAPSv02 functionals (88 hand-crafted features).\n"
        "Protocol, the OPERA-probe and random-weights rows, and how to read the numbers: "
        "docs/RESULTS.md.\n\n"
        f"{demoted}\n"
    )


def write_model_card(path: Path, manifest: Manifest, notes: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(render_model_card(manifest, notes))
    return path
