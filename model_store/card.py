"""A version's model card: what its labels mean, how well it does, for what not to use it.

Written from the version's own files (manifest, ``metrics.json``), so the card of any version,
the live one included, is true for that version: ``emostream models show VERSION --card``,
``GET /api/models/{version}/card`` and ``docs/model-card.md`` (the shipped version's card).
"""

import json

from emostream.labels import EMOTIONS
from model_store.store import ModelStore

FER2013_TRAIN = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "sad": 4830,
    "surprise": 3171,
    "neutral": 4965,
}
"""Faces per class in FER2013's training split (28,709 in all)."""

PIPELINE_RECALL = (
    "BlazeFace (the default detector, whole frame plus 2x2 tiles) found 91.9% of FER2013 validation "
    "faces placed at 96, 144 and 192 px on 640x480 frames with camera noise (83.8%, 94.1% and "
    "97.8% by size), with 0.02 false boxes per face-free frame; Haar at the previous default "
    "found 73.3%; on the faces found, crops were labelled right 69.8% of the time against 70.0% "
    "for the original 48x48 images (`python benchmarks/detector.py --per-class 20`, "
    "`python benchmarks/crop_margin.py --per-class 40`, 2026-12-01)."
)


def combination(config: dict) -> str | None:
    """How a version combined from others (``models average`` or ``ensemble``) was made; None if trained."""
    if averaged := config.get("averaged_from"):
        return "the mean of the weights of " + " and ".join(f"`{v}`" for v in averaged)
    if members := config.get("ensemble_of"):
        return "the mean of the scores of " + " and ".join(f"`{v}`" for v in members) + ", run side by side"
    return None


def _lineage(parent: str | None, config: dict) -> str:
    if made := combination(config):
        return f"; {made}"
    return f"; fine-tuned from `{parent}`" if parent else ""


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _performance(manifest, metrics: dict) -> list[str]:
    m = manifest.metrics
    val = metrics.get("validation", {})
    lines = [
        "| validation (FER2013 PublicTest) | value |",
        "|---|---:|",
        f"| faces | {m.get('validation_n', val.get('n', '-'))} |",
        f"| accuracy, single crop (Keras model) | {_percent(m.get('validation_accuracy'))} |",
        f"| accuracy of the served int8 file | {_percent(m.get('served_validation_accuracy'))} |",
        f"| accuracy, flip TTA | {_percent(m.get('validation_tta_accuracy'))} |",
        f"| macro F1 | {m.get('validation_macro_f1', 0):.3f} |",
        f"| temperature (fitted on validation) | {manifest.temperature:.2f} |",
    ]
    if "validation_ece" in m:
        lines += [
            f"| expected calibration error, raw scores | {m['validation_ece_uncalibrated']:.4f} |",
            f"| expected calibration error, as served | {m['validation_ece']:.4f} |",
        ]
    if val.get("per_class"):
        lines += ["", "| class | precision | recall | F1 | faces |", "|---|---:|---:|---:|---:|"]
        for name in EMOTIONS:
            row = val["per_class"][name]
            lines.append(
                f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
            )
    if val.get("confusion"):
        lines += ["", "Confusion matrix (rows: true class, columns: predicted, in the order above):", ""]
        lines += ["| | " + " | ".join(EMOTIONS) + " |", "|---|" + "---:|" * len(EMOTIONS)]
        rows = zip(EMOTIONS, val["confusion"], strict=True)
        lines += [f"| {name} | " + " | ".join(map(str, row)) + " |" for name, row in rows]
    return lines


def model_card(store: ModelStore, version: str | None = None) -> str:
    """The Markdown model card of ``version`` (default: the live one)."""
    manifest = store.verify(version or store.require_live())
    directory = store.path(manifest.version)
    metrics = json.loads((directory / "metrics.json").read_text()) if "metrics.json" in manifest.files else {}
    config = manifest.training_config
    train = manifest.datasets.get("train", {})
    counts = ", ".join(f"{name} {n:,}" for name, n in FER2013_TRAIN.items())
    sections = [
        f"# Model card: {manifest.version}",
        "",
        f"Architecture `{manifest.architecture}`"
        + (f", {manifest.metrics['parameters']:,} parameters" if manifest.metrics.get("parameters") else "")
        + f"; published {manifest.created_at}"
        + _lineage(manifest.parent, config)
        + ". Generated from the version's manifest and metrics (`emostream models show "
        + f"{manifest.version} --card`).",
        "",
        "## What it outputs",
        "",
        "For each face a detector finds, one of 7 categories of *facial expression*: "
        + ", ".join(EMOTIONS)
        + ", with a score per category, computed from a 48x48 grayscale crop framed like a FER2013 "
        "image. The scores are calibrated: a version's temperature, fitted on validation, makes a "
        "shown 70% right about 70% of the time on faces like FER2013's.",
        "",
        "**A label describes the appearance of a face, not what the person feels.** The same "
        "feeling shows as different facial movements across people, situations and cultures, "
        "and the same movement can come with different feelings; a scowl is not proof of anger "
        "(Barrett, Adolphs, Marsella, Martinez and Pollak, *Emotional Expressions Reconsidered: "
        "Challenges to Inferring Emotion From Human Facial Movements*, Psychological Science in "
        "the Public Interest 20(1), 2019).",
        "",
        "## Data",
        "",
        "FER2013 (Goodfellow et al., *Challenges in Representation Learning*, ICML 2013 workshop): "
        "faces found by web image searches for emotion-related keywords, cropped automatically to "
        "48x48 grayscale, labelled with the search's category and screened by people; 28,709 "
        f"training, 3,589 validation (PublicTest) and 3,589 held-out test (PrivateTest) faces. "
        f"Training faces per class: {counts}: `disgust` is rare, so it is the least reliable "
        "class. The labels are noisy: human accuracy on FER2013 is about 65%, and a relabelling "
        "by ten annotators per face (FER+, Barsoum et al., 2016) disagreed with many original "
        "labels. The faces carry no demographic annotation, so **accuracy across age, gender, "
        "skin tone or culture is unknown** and may differ from the figures below.",
        "",
        ("The first of the versions combined (see its card) " if combination(config) else "This version ")
        + f"trained on {train.get('n', 'an unrecorded number of')} faces from `{train.get('source', '?')}` "
        f"({train.get('fingerprint', '')}), {config.get('epochs', '?')} epochs"
        + (f", distilled from {len(config['teachers'])} teacher models" if config.get("teachers") else "")
        + (f", plus feedback folders {config['extra_train']}" if config.get("extra_train") else "")
        + ". Feedback (users' corrections of a label: the 48x48 crop and the chosen label) is "
        "stored only while the operator's switch `EMOSTREAM_FEEDBACK=1` is on, and is used only "
        "by retraining jobs that ask for it.",
        "",
        "## Performance",
        "",
        *_performance(manifest, metrics),
        "",
        "Produced by `emostream evaluate --data DIR/validation --json` (the manifest's figures are "
        "written at publish by the same code). The held-out PrivateTest split was never used: "
        "selecting on validation makes these figures somewhat optimistic for new faces.",
        "",
        f"On full frames: {PIPELINE_RECALL}",
        "",
        "## Intended uses",
        "",
        "Demonstrations and teaching; research with participants' informed consent; aggregate, "
        "anonymous measurements (e.g. how an audience's expressions change during a screening) "
        "where no decision is taken about a person.",
        "",
        "## Out of scope",
        "",
        "Any decision about an individual: hiring, grading or proctoring, policing, border "
        "control, credit, insurance, health or diagnosis, or judging honesty or intent. The EU "
        "AI Act prohibits emotion-recognition systems in workplaces and education institutions "
        "except for medical or safety reasons, and treats emotion recognition as high-risk "
        "elsewhere; operators must check the law where they deploy.",
        "",
        "## Privacy",
        "",
        "Frames are processed in memory and never written to disk by emostream. A frame waits in "
        "Redis's frames stream (at most `EMOSTREAM_FRAMES_MAXLEN` entries) until a worker takes it "
        "and is deleted once answered or dropped; results carry boxes and scores, not pixels, and "
        "a reply stream expires two minutes after its last answer. A Redis with persistence on (the "
        "Kubernetes manifests snapshot every 60 s) can hold the frames waiting at that moment in its "
        "snapshot file. Nothing identifies a person: no "
        "face recognition, no embeddings. While feedback capture is on, the gateway keeps each open "
        "stream's last 50 sampled frames in memory, so that a correction is cut from the frame it "
        "names. With `EMOSTREAM_SHADOW_SAMPLE` above 0 (default 0), workers keep that many recent "
        "48x48 face crops in Redis to compare a candidate model on live faces. Feedback is kept "
        "only while the operator's switch is on: each correction as a 48x48 PNG under "
        "`EMOSTREAM_FEEDBACK_DIR/<class>/` and a line of `feedback.jsonl` (file, label, predicted "
        "label, model version, time), until the operator deletes them (remove the files, or the "
        "directory).",
        "",
    ]
    return "\n".join(sections)
