"""MLflow "model from code": the pyfunc that serves any candidate directory as a summariser.

MLflow copies this file into every logged model and executes it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``), so nothing is pickled and the class
needs no import path at serving time. ``nash_core`` travels with the model (``code_paths``), so
a pruned export (custom per-layer shapes) loads wherever the pip requirements are installed.

Input: a DataFrame with a string column named ``source`` (the logged signature, which MLflow
enforces before ``predict`` runs, in process and behind ``mlflow models serve``: another column
name is refused with an error naming ``source``); an empty or whitespace-only source is refused
too (HTTP 400 naming the rows), rather than summarised into something made up. Output: one row
per source, ``summary``, ``source_tokens`` (the source's length in tokens, prefix included) and
``source_truncated`` (true when it was longer than the model's ``max_source_length`` and only
its beginning was read).
``model_config`` carries the decoding settings and the training-time source prefix, and
``quantize: int8`` for an int8 variant (re-quantised at load, CPU only: nothing is pickled),
``quantize: bf16`` / ``fp16`` for a precision variant (cast at load; fp16 on CUDA only).
A CTranslate2 variant (``quantize: ct2-int8``...) carries its converted directory and generates
through CTranslate2 with the thread setting measured when it was converted.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


def _sources(model_input) -> list[str]:
    """The ``source`` texts, or an MlflowException (HTTP 400) naming what is wrong."""
    if not isinstance(model_input, pd.DataFrame) or "source" not in model_input.columns:
        got = (
            list(model_input.columns)
            if isinstance(model_input, pd.DataFrame)
            else type(model_input).__name__
        )
        raise MlflowException(
            f"expected a DataFrame with a 'source' column of texts to summarise (got {got})",
            error_code=INVALID_PARAMETER_VALUE,
        )
    texts = list(model_input["source"])
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        rows = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise MlflowException(
            f"'source' is empty, whitespace-only or not text in row(s) {rows}: send the text "
            "to summarise in every row",
            error_code=INVALID_PARAMETER_VALUE,
        )
    return texts


class Seq2SeqSummarizer(PythonModel):
    def load_context(self, context):
        from nash_core.config import EvaluationConfig
        from nash_core.loading import load_seq2seq
        from nash_core.runtime import pick_device

        cfg = dict(context.model_config or {})
        self.prefix = cfg.pop("source_prefix", "")
        self.max_source_length = cfg.pop("max_source_length", None)
        self.eval_cfg = EvaluationConfig(**cfg.pop("evaluation", {}))
        quantize = cfg.pop("quantize", None)
        device = cfg.pop("device", "auto")
        files = cfg.pop("files", None)
        if files:  # what was logged (nash_mlflow.model_check): refuse a damaged copy
            from nash_core.integrity import damage

            problem = damage(context.artifacts["model_dir"], files)
            if problem:
                raise ValueError(f"this model's artifact is damaged: {problem}")
        model_dir = context.artifacts["model_dir"]
        from nash_core.runtimes.ct2 import is_ct2_dir

        if is_ct2_dir(model_dir):  # a CTranslate2 variant: generates through CTranslate2
            from nash_core.quantize import load_for_measurement

            self.device = pick_device(device)
            self.model, self.tokenizer = load_for_measurement(model_dir, device=self.device)
            return
        self.device = pick_device("cpu" if quantize == "int8" else device)
        self.model, self.tokenizer = load_seq2seq(
            context.artifacts["model_dir"], device=self.device
        )
        if quantize == "int8":
            from nash_core.quantize import quantize_dynamic_int8

            self.model = quantize_dynamic_int8(self.model)
        elif quantize in ("bf16", "fp16"):
            import torch

            dtype = torch.bfloat16 if quantize == "bf16" else torch.float16
            self.model = self.model.to(dtype)

    # the DataFrame hint tells MLflow there is nothing to infer from it (its schema is the
    # logged signature); without any hint MLflow warns on every save and load
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from nash_core.evaluate import generate

        sources = [self.prefix + t for t in _sources(model_input)]
        tokens = [len(ids) for ids in self.tokenizer(sources)["input_ids"]]
        limit = self.max_source_length
        summaries = generate(
            self.model,
            self.tokenizer,
            sources,
            self.eval_cfg,
            self.device,
            max_source_length=limit,
        )
        return pd.DataFrame(
            {
                "summary": summaries,
                "source_tokens": tokens,
                "source_truncated": [limit is not None and n > limit for n in tokens],
            }
        )


mlflow.models.set_model(Seq2SeqSummarizer())
