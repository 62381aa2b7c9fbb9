"""``emostream ingest``: sources other than a browser (files, RTSP, local cameras) fed into the frames
stream, and their results collected as JSON lines. Built on the contract in :mod:`ingest` (wire
format, keys, crops, tracks, sampling), which the gateway and workers stand on too."""
