"""Shallow decoder: choose k of the L decoder layers and delete the rest (method.md section 1).

The decoder runs once per generated token, so its depth dominates generation latency. The kept
layers keep their fine-tuned weights. Two things break silently when layers are deleted naively
in transformers 5 and are handled here: T5's relative-position table lives only in decoder
block 0, and every attention indexes the KV cache by its ``layer_idx``.
"""

from __future__ import annotations

from torch import nn

from nash_core.adapters import get_adapter
from nash_core.errors import ModelError

SELECTIONS = ("uniform", "low", "high", "custom")


def select_layers(
    num_layers: int, k: int, how: str = "uniform", custom: list[int] | None = None
) -> list[int]:
    """Indices of the k decoder layers to keep (increasing).

    uniform: floor((L-1)/(k-1) * d) for d = 0..k-1 (k = 1 keeps layer 0); low: the first k;
    high: the last k; custom: the given list (validated against L).
    """
    if not 1 <= k <= num_layers:
        raise ModelError(
            f"decoder_layers = {k} is not between 1 and the model's {num_layers} decoder layers"
        )
    if how == "uniform":
        if k == 1:
            return [0]
        return [((num_layers - 1) * d) // (k - 1) for d in range(k)]
    if how == "low":
        return list(range(k))
    if how == "high":
        return list(range(num_layers - k, num_layers))
    if how == "custom":
        if not custom or len(custom) != k:
            raise ModelError(
                f"custom_layers must list exactly {k} decoder layer indices (got {custom})"
            )
        if sorted(set(custom)) != list(custom) or custom[0] < 0 or custom[-1] >= num_layers:
            raise ModelError(
                f"custom_layers {custom} must be distinct, increasing and within "
                f"0..{num_layers - 1}"
            )
        return list(custom)
    raise ModelError(f"layer_selection {how!r} is unknown; use one of {', '.join(SELECTIONS)}")


def keep_decoder_layers(model: nn.Module, indices: list[int]) -> nn.Module:
    """Keep only the decoder layers ``indices`` (in place) and return the model.

    Moves T5's relative-position table into the new first block when block 0 is dropped,
    renumbers every kept attention's ``layer_idx`` (self and cross) to 0..k-1 so the KV cache
    lines up, updates the config counts, and records the kept ORIGINAL indices in
    ``model.config.nash_decoder_layers_kept`` (composed with any earlier removal).
    """
    adapter = get_adapter(model)
    layers = adapter.layers(model, "decoder")
    if (
        not indices
        or sorted(set(indices)) != list(indices)
        or indices[-1] >= len(layers)
        or indices[0] < 0
    ):
        raise ModelError(
            f"decoder layer indices {indices} must be distinct, increasing and within "
            f"0..{len(layers) - 1}"
        )
    kept = [layers[i] for i in indices]
    if indices[0] != 0:
        adapter.move_position_table(layers[0], kept[0])
    for new_idx, layer in enumerate(kept):
        for kind in ("self", "cross"):
            ref = adapter.attention(layer, "decoder", new_idx, kind)
            if ref is not None:
                ref.module.layer_idx = new_idx
    for i in reversed(range(len(layers))):
        if i not in indices:
            del layers[i]  # ModuleList re-keys the survivors 0..k-1, in order
    adapter.set_decoder_depth(model, len(kept))
    original = getattr(model.config, "nash_decoder_layers_kept", None)
    model.config.nash_decoder_layers_kept = (
        [original[i] for i in indices] if original else list(indices)
    )
    return model
