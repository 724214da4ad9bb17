"""The runtime registry and the interface every serving runtime implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nash_core.errors import ModelError, NashError


class NotExpressible(ModelError):
    """A model whose architecture a runtime cannot represent (or whose conversion failed its
    exactness check). Callers log the message and keep the model as a PyTorch candidate."""

    def __init__(self, runtime: str, reason: str):
        self.runtime, self.reason = runtime, reason
        super().__init__(f"not expressible in {runtime}: {reason}")


class Runtime:
    """One way of serving a seq2seq model directory.

    ``prepare`` turns a candidate's model directory into what this runtime loads (a no-op for
    PyTorch, a conversion for CTranslate2) and returns that path; ``generator`` loads it and
    returns an object with ``generate(sources, eval_cfg, max_source_length=None) -> list[str]``
    and ``generate_with_lengths(...) -> (texts, new-token counts)`` under the shared decoding
    protocol (``nash_core.evaluate``).
    """

    name: str = ""
    #: how messages name it ("CTranslate2")
    title: str = ""
    #: prefix of this runtime's variant names in ``benchmark.variants`` (``ct2-int8``)
    prefix: str = ""
    #: True when ``prepare`` writes a self-contained directory that is what gets served and
    #: logged (a conversion); False when the served weights stay the source's (PyTorch markers)
    self_contained: bool = False

    def refuses(self, arm) -> str | None:
        """Why this runtime cannot express any candidate of the pruning ``arm`` (known from
        its config, before training), or None."""
        return None

    def prepare(self, model_dir: str | Path, out_dir: str | Path, precision: str) -> Path:
        raise NotImplementedError

    def generator(self, prepared_dir: str | Path, device: str = "cpu", **options):
        raise NotImplementedError

    def compute_types(self, device: str) -> Sequence[str]:
        """The precisions this runtime can run on ``device`` (``"cpu"`` / ``"cuda"``)."""
        raise NotImplementedError


RUNTIMES: dict[str, Runtime] = {}


def register_runtime(name: str) -> Callable[[type[Runtime]], type[Runtime]]:
    """Class decorator: register one instance of the runtime under ``name``."""

    def wrap(cls: type[Runtime]) -> type[Runtime]:
        if name in RUNTIMES:
            raise ValueError(f"runtime '{name}' is registered twice")
        cls.name = name
        RUNTIMES[name] = cls()
        return cls

    return wrap


def runtime_names() -> list[str]:
    return sorted(RUNTIMES)


def split_variant(variant: str) -> tuple[Runtime, str]:
    """``benchmark.variants`` name -> (runtime, precision): ``ct2-int8`` -> (ctranslate2, int8),
    ``int8`` -> (pytorch, int8)."""
    for runtime in RUNTIMES.values():
        if runtime.prefix and variant.startswith(runtime.prefix):
            return runtime, variant.removeprefix(runtime.prefix)
    return RUNTIMES["pytorch"], variant


def refused_variants(cfg) -> dict[tuple[str, str], str]:
    """(arm label, variant) -> "not expressible in <runtime>: <reason>" for every serving
    variant of ``cfg`` that an arm's candidates cannot have (said before any training)."""
    out = {}
    for variant in cfg.benchmark.all_variants:
        runtime, _ = split_variant(variant)
        for arm in cfg.pruning.arms:
            reason = runtime.refuses(arm)
            if reason:
                out[(arm.label, variant)] = str(
                    NotExpressible(runtime.title or runtime.name, reason)
                )
    return out


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise NashError(
            f"unknown serving runtime '{name}'; known: {', '.join(runtime_names())}"
        ) from None
