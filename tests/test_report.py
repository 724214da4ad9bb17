"""Trade-off table, Pareto plot and mask heatmap: real files, checked by content."""

import pandas as pd
from PIL import Image

from nash_core.report import mask_heatmap, pareto_plot, to_markdown, tradeoff_table, write_tradeoff
from nash_core.selection import pareto_frontier

LAT = "latency_p50_ms_bs1"


def candidates():
    return pd.DataFrame({
        "label": ["teacher", "nash-k2@0.3", "sft-k2", "cofi@0.3"],
        "method": ["teacher", "nash", "sft", "cofi"],
        "rougeL": [0.80, 0.78, 0.70, 0.79],
        "rougeL_retention": [1.0, 0.975, 0.875, 0.9875],
        LAT: [100.0, 40.0, 45.0, 90.0],
        "speedup": [1.0, 2.5, 2.2, 1.1],
    })


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
    out = pareto_plot(df, "rougeL", LAT, pareto_frontier(df, "rougeL", LAT), "nash-k2@0.3",
                      tmp_path / "sub" / "pareto.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400
    assert not list(out.parent.glob(".*tmp*"))


def test_mask_heatmap_draws_kept_units(tmp_path):
    shapes = {"family": "t5", "encoder": [{"self": [0, 2], "ffn": 96},
                                          {"self": None, "ffn": 128}], "decoder": []}
    out = mask_heatmap(shapes, num_heads=4, d_ff=128, path=tmp_path / "mask.png", title="x")
    with Image.open(out) as im:
        assert im.format == "PNG"
        rgb = im.convert("RGB")
        colours = {rgb.getpixel((x, y)) for x in range(0, im.size[0], 4)
                   for y in range(0, im.size[1], 4)}
    assert len(colours) > 10  # the grid is drawn, not a blank canvas
