"""Running ``.tflite`` models on LiteRT (no TensorFlow): any batch size, one interpreter per bucket.

An interpreter's input shape is fixed once its tensors are allocated, and reallocating costs more
than a small model's call. So a batch is padded up to the next power of two (at most
``max_batch``; larger batches run in chunks), and each of those few sizes keeps its own
interpreter, made on first use. A model converted with a fixed batch of one (its graph reshapes
to batch 1, as BlazeFace's does) runs one input per call.
"""

from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class LiteModel:
    """A ``.tflite`` model called on batches of any size; outputs by name."""

    def __init__(self, model: Path | bytes, threads: int = 0, max_batch: int = 64) -> None:
        self.content = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.threads = threads or None
        self.max_batch = max_batch
        self._interpreters: dict[int, Interpreter] = {}
        detail = self._interpreter(1).get_input_details()[0]
        self.input_shape = tuple(int(d) for d in detail["shape"][1:])
        if detail["shape_signature"][0] != -1:
            self.max_batch = 1

    def _interpreter(self, batch: int) -> Interpreter:
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            interpreter = Interpreter(model_content=self.content, num_threads=self.threads)
            if batch != 1:
                detail = interpreter.get_input_details()[0]
                interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    def bucket(self, n: int) -> int:
        """The batch size ``n`` inputs run at: the next power of two, at most ``max_batch``."""
        return min(self.max_batch, 1 << max(0, n - 1).bit_length())

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output, by name, for the float32 batch ``x`` (non-empty; its first axis is the batch)."""
        chunks = [self._run(x[start : start + self.max_batch]) for start in range(0, len(x), self.max_batch)]
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = len(x)
        size = self.bucket(n)
        if size != n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
        interpreter = self._interpreter(size)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ascontiguousarray(x, np.float32))
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"])[:n].copy() for d in interpreter.get_output_details()}
