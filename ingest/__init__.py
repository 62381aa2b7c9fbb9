"""The contract the gateway, workers and ``emostream ingest`` all stand on: the wire format of
frames and results (:mod:`ingest.wire`), every Redis key (:mod:`ingest.keys`), FER2013-matched
crops (:mod:`ingest.crop`), face tracks and smoothed labels (:mod:`ingest.tracks`) and the
sampling rate (:mod:`ingest.sampling`). ``emostream ingest`` itself is :mod:`ingest.app`."""
