"""One typed configuration object, built from ``EMOSTREAM_*`` variables and flags, passed down."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def _data_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "emostream"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; every field has an ``EMOSTREAM_<FIELD>`` variable."""

    model_store_root: Path
    runs_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            model_store_root=Path(env.get("EMOSTREAM_MODEL_STORE") or _data_home(env) / "models").expanduser(),
            runs_dir=Path(env.get("EMOSTREAM_RUNS") or Path.home() / ".cache" / "emostream" / "runs").expanduser(),
        )

    def model_store(self):
        """The model store at ``model_store_root``, seeded with the bundled model when empty."""
        from model_store.store import ModelStore

        return ModelStore.open_default(self.model_store_root)
