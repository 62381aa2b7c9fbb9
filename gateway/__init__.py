"""The WebRTC gateway: browser cameras in, labelled video and results out.

A camera's path through it: :mod:`gateway.app` answers the browser's offer, a
:class:`gateway.session.Session` owns the peer connection, :mod:`gateway.sampler` puts the
newest frame at ``sample_fps`` on the frames stream (:mod:`ingest.wire`), workers answer on
this gateway's reply stream, :mod:`gateway.results` hands each result to its session, which
sends it on the ``results`` data channel and to :mod:`gateway.labelled_track`, which draws
it (:mod:`gateway.overlay`) on the video sent back. :func:`gateway.command.run` serves it all.

Beside the video path: :mod:`gateway.retraining` (retraining jobs and the model store over
HTTP) and :mod:`gateway.feedback` (users' label corrections as training data). The gateway
never imports TensorFlow: aiortc and TensorFlow in one process crash.
"""
