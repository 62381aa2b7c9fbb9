"""Versioned, checksummed model artifacts with metrics and lineage, and the live pointer."""

from model_store.errors import CorruptVersion, IncompatibleVersion, ModelStoreError, PromotionRefused, UnknownVersion
from model_store.manifest import Manifest
from model_store.store import LoadedModel, ModelStore

__all__ = [
    "CorruptVersion",
    "IncompatibleVersion",
    "LoadedModel",
    "Manifest",
    "ModelStore",
    "ModelStoreError",
    "PromotionRefused",
    "UnknownVersion",
]
