"""Trade-off table, Pareto plot and mask heatmap: real files, checked by content."""

import pandas as pd
import pytest
from PIL import Image

from nash_core.report import (
    error_bars,
    mask_heatmap,
    pareto_plot,
    structure_and_precision,
    to_markdown,
    tradeoff_table,
    write_tradeoff,
)
from nash_core.selection import pareto_frontier

LAT = "latency_p50_ms_bs1"


def candidates():
    return pd.DataFrame(
        {
            "label": ["teacher", "nash-k2@0.3", "sft-k2", "cofi@0.3"],
            "method": ["teacher", "nash", "sft", "cofi"],
            "rougeL": [0.80, 0.78, 0.70, 0.79],
            "rougeL_retention": [1.0, 0.975, 0.875, 0.9875],
            LAT: [100.0, 40.0, 45.0, 90.0],
            "speedup": [1.0, 2.5, 2.2, 1.1],
        }
    )


def test_tradeoff_table_sorted_flags_and_files(tmp_path):
    df = candidates()
    front = pareto_frontier(df, "rougeL", LAT)
    table = tradeoff_table(df, LAT, front, "nash-k2@0.3")
    assert list(table["label"]) == ["nash-k2@0.3", "sft-k2", "cofi@0.3", "teacher"]
    assert list(table["pareto"]) == [True, False, True, True]
    assert list(table["champion"]) == [True, False, False, False]
    assert list(table.columns[:2]) == ["label", "method"] and LAT in table.columns

    csv, md = write_tradeoff(table, tmp_path)
    back = pd.read_csv(csv)
    assert back["label"].tolist() == table["label"].tolist()
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| label | method |") and len(lines) == 2 + len(table)
    assert "| nash-k2@0.3 | nash | 0.78 | 0.975 | 40 | 2.5 | yes | yes |" in lines


def test_markdown_blanks_missing_values():
    md = to_markdown(pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", "y"]}))
    assert md.splitlines()[3] == "|  | y |"


def test_pareto_plot_is_a_png(tmp_path):
    df = candidates()
    out = pareto_plot(
        df,
        "rougeL",
        LAT,
        pareto_frontier(df, "rougeL", LAT),
        "nash-k2@0.3",
        tmp_path / "sub" / "pareto.png",
    )
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400
    assert not list(out.parent.glob(".*tmp*"))


def test_intervals_in_the_table_and_as_error_bars_on_both_axes(tmp_path):
    df = candidates().assign(
        **{
            f"{LAT}_low": [95.0, 38.0, 41.0, 85.0],
            f"{LAT}_high": [104.0, 43.0, 46.0, 92.0],
            "rougeL_delta": [0.0, -0.02, -0.10, -0.01],
            "rougeL_delta_ci_low": [0.0, -0.03, -0.13, float("nan")],
            "rougeL_delta_ci_high": [0.0, -0.01, -0.07, float("nan")],
        }
    )
    bars = error_bars(df, "rougeL", LAT)
    # latency: 40 ms in [38, 43]; quality: 0.78 with a delta of -0.02 in [-0.03, -0.01]
    assert bars["_t_minus"][1] == pytest.approx(2.0) and bars["_t_plus"][1] == pytest.approx(3.0)
    assert bars["_q_minus"][1] == pytest.approx(0.01) and bars["_q_plus"][1] == pytest.approx(0.01)
    assert bars["_q_minus"][0] == 0 and bars["_q_plus"][3] == 0  # teacher; interval missing
    front = pareto_frontier(df, "rougeL", LAT)
    table = tradeoff_table(df, LAT, front, "nash-k2@0.3", tied=["nash-k2@0.3", "sft-k2"])
    cols = list(table.columns)
    assert cols[cols.index(LAT) : cols.index(LAT) + 3] == [LAT, f"{LAT}_low", f"{LAT}_high"]
    assert dict(zip(table["label"], table["tied"])) == {
        "nash-k2@0.3": True,
        "sft-k2": True,
        "cofi@0.3": False,
        "teacher": False,
    }
    plain = pareto_plot(candidates(), "rougeL", LAT, front, "x", tmp_path / "a.png")
    barred = pareto_plot(df, "rougeL", LAT, front, "x", tmp_path / "b.png")
    assert plain.read_bytes() != barred.read_bytes()


def test_mask_heatmap_draws_kept_units(tmp_path):
    shapes = {
        "family": "t5",
        "encoder": [{"self": [0, 2], "ffn": 96}, {"self": None, "ffn": 128}],
        "decoder": [],
    }
    out = mask_heatmap(shapes, num_heads=4, d_ff=128, path=tmp_path / "mask.png", title="x")
    with Image.open(out) as im:
        assert im.format == "PNG"
        rgb = im.convert("RGB")
        colours = {
            rgb.getpixel((x, y)) for x in range(0, im.size[0], 4) for y in range(0, im.size[1], 4)
        }
    assert len(colours) > 10  # the grid is drawn, not a blank canvas


def test_pareto_labels_of_close_candidates_do_not_overlap():
    """The demo's nash-k2@0.2 and sft-k2 sit 12 ms apart at the same ROUGE-L: their labels used
    to print on top of each other."""
    import matplotlib.pyplot as plt

    from nash_core.report import _place_labels

    df = pd.DataFrame(
        {
            "label": ["nash-k2@0.3", "nash-k2@0.2", "sft-k2", "nash-k3@0.3", "teacher"],
            "_t": [101.3, 104.8, 117.2, 138.6, 246.0],
            "_q": [0.7986, 0.7738, 0.7735, 0.8028, 0.8591],
        }
    )
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter(df["_t"], df["_q"])
    _place_labels(fig, ax, df)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    plt.close(fig)
    assert sorted(t.get_text() for t in ax.texts) == sorted(df["label"])  # one label each
    clashes = [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert not clashes


def test_structure_and_precision_from_the_variant_suffix():
    assert structure_and_precision("nash") == ("nash", "fp32")
    assert structure_and_precision("magnitude-int8") == ("magnitude", "int8")
    assert structure_and_precision("teacher-bf16") == ("teacher", "bf16")
    assert structure_and_precision("sft-fp16") == ("sft", "fp16")
    # a runtime variant is one suffix, the longest that matches
    assert structure_and_precision("nash-ct2-int8") == ("nash", "ct2-int8")
    assert structure_and_precision("teacher-ct2-int8-bf16") == ("teacher", "ct2-int8-bf16")
    # a hyphen that is not a precision suffix is part of the name
    assert structure_and_precision("my-arm") == ("my-arm", "fp32")


def test_pareto_plot_of_a_structure_x_precision_sweep(tmp_path):
    base = candidates()
    variants = base.assign(
        label=base["label"] + "-int8", method=base["method"] + "-int8", **{LAT: base[LAT] * 0.9}
    )
    df = pd.concat([base, variants], ignore_index=True)
    out = pareto_plot(
        df,
        "rougeL",
        LAT,
        pareto_frontier(df, "rougeL", LAT),
        "nash-k2@0.3-int8",
        tmp_path / "p.png",
    )
    with Image.open(out) as im:
        # the legend sits to the right of the axes and is part of the picture
        assert im.format == "PNG" and im.size[0] > im.size[1] > 300
