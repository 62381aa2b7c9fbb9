"""The model card: written from a version's own files, the same from the CLI, the API and docs/."""

import json
import re
import urllib.error
import urllib.request

from factories import REPO, publish_brightness, run_cli
from gateway_helpers import GatewayProcess

from emostream.labels import EMOTIONS
from model_store import ModelStore
from model_store.card import model_card
from model_store.store import BUNDLED

DOCS_CARD = REPO / "docs" / "model-card.md"


def test_the_docs_card_is_the_shipped_live_versions_card():
    assert DOCS_CARD.read_text() == model_card(ModelStore(BUNDLED)), (
        "docs/model-card.md is stale: EMOSTREAM_MODEL_STORE=model_store/bundled "
        "emostream models show --card > docs/model-card.md"
    )


def test_the_cards_figures_are_the_live_manifests():
    store = ModelStore(BUNDLED)
    manifest = store.manifest(store.require_live())
    metrics = json.loads((store.path(manifest.version) / "metrics.json").read_text())
    card = model_card(store)
    m = manifest.metrics
    assert card.startswith(f"# Model card: {manifest.version}\n")
    assert f"| accuracy, single crop (Keras model) | {100 * m['validation_accuracy']:.2f}% |" in card
    assert f"| accuracy of the served int8 file | {100 * m['served_validation_accuracy']:.2f}% |" in card
    assert f"| macro F1 | {m['validation_macro_f1']:.3f} |" in card
    assert f"| temperature (fitted on validation) | {manifest.temperature:.2f} |" in card
    assert f"| expected calibration error, as served | {m['validation_ece']:.4f} |" in card
    for name in EMOTIONS:
        row = metrics["validation"]["per_class"][name]
        assert f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |" in card
    names = "|".join(EMOTIONS)
    confusion = [line for line in card.splitlines() if re.fullmatch(rf"\| ({names})( \| \d+)+ \|", line)]
    assert [[int(v) for v in line.split("|")[2:-1]] for line in confusion] == metrics["validation"]["confusion"]
    for must in ("not what the person feels", "Psychological Science in the Public Interest", "EU AI Act", "unknown"):
        assert must in card


def test_cli_and_api_give_any_versions_card(redis_server, tmp_path):
    store = ModelStore(tmp_path / "store")
    version = publish_brightness(store, 0.42)
    store.promote(version, force=True)
    env = {"EMOSTREAM_MODEL_STORE": str(store.root)}
    summary = run_cli("models", "show", version, env=env).stdout.splitlines()
    assert summary[0] == f"{version} (live)" and len(summary) <= 8  # a summary; --json gives everything
    assert any("accuracy 0.4200" in line for line in summary)
    shown = run_cli("models", "show", version, "--card", env=env)
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout == model_card(store, version)
        and "| accuracy, single crop (Keras model) | 42.00% |" in shown.stdout
    )
    with GatewayProcess(redis_server.url, **env) as gateway:
        with urllib.request.urlopen(f"{gateway.url}/api/models/live/card", timeout=30) as answer:
            assert answer.headers["Content-Type"].startswith("text/markdown")
            assert answer.read().decode() == shown.stdout
        try:
            urllib.request.urlopen(f"{gateway.url}/api/models/no-such-version/card", timeout=30)
            raise AssertionError("an unknown version has no card")
        except urllib.error.HTTPError as err:
            assert err.code == 404 and "no-such-version" in json.load(err)["error"]
