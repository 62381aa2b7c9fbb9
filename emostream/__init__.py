"""emostream: real-time facial-expression recognition over WebRTC, Redis and batched CNN workers."""

__version__ = "0.1.0"
