"""Model-store errors, importable without TensorFlow."""


class ModelStoreError(Exception):
    """Base of every model-store error."""


class UnknownVersion(ModelStoreError, LookupError):
    """No such version, or no live version."""


class CorruptVersion(ModelStoreError):
    """A version whose files are missing, unreadable or fail their checksums."""


class IncompatibleVersion(ModelStoreError):
    """A version this code cannot serve (classes, input shape, manifest format)."""


class PromotionRefused(ModelStoreError):
    """A promotion that would make the live model less accurate, without ``force``; ``reason`` says why,
    the message also how to promote ``version`` anyway."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"{reason}; `emostream models promote {version} --force` promotes it anyway")
        self.version, self.reason = version, reason
