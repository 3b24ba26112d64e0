"""Layer discovery (paper, App. B) as an analysis: activation patching on culture-mini's localized / non-localized
pairs of some countries, written as layers.csv, layers.json and layers.png, with the suggested layer and whether
there was any signal to suggest it from. `yapo-bench analyze layers` and a run's `layer: auto` both use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yapo_bench.analysis.outputs import pyplot, save_figure, write_csv, write_text


def discover_layer(model: Any, tokenizer: Any, model_name: str, countries: list[str], out: Path,
                   layers: list[int] | None = None, max_pairs: int | None = None, normalization: str = "chars",
                   progress: bool = True, culture_data: str = "culture-mini", data_dir: str | None = None) -> dict[str, Any]:
    """Layer discovery by activation patching on the localized/non-localized pairs of `countries` in `culture_data`;
    writes layers.csv, layers.json and layers.png into `out` and returns the summary (with the suggested
    layer and whether there was any signal to suggest it from)."""
    from yapo_bench.analysis.patching import culture_patching_pairs, layer_patching
    from yapo_bench.data.culture_sources import culture_items

    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"--max-pairs: {max_pairs}; expected a positive integer")
    pairs = culture_patching_pairs(culture_items(culture_data, data_dir), countries)
    if max_pairs is not None:
        by_country: dict[str, list] = {}
        for pair in pairs:  # sorted by country, then question_id: the first questions of each country
            by_country.setdefault(pair.country, []).append(pair)
        pairs = [pair for group in by_country.values() for pair in group[:max_pairs]]
    result = layer_patching(model, tokenizer, pairs, layers=layers, normalization=normalization, progress=progress)
    table = result.table()
    write_csv(out / "layers.csv", table)
    max_gain = float(result.gain().max())
    localized_gain = float((result.source_target - result.baseline_target).nanmean())
    summary = {
        "model": model_name, "data": culture_data, "countries": sorted({p.country for p in pairs}),
        "n_pairs": len(pairs), "suggested_layer": result.suggested_layer,
        # Patching can only carry over what the localized prompt adds; without that the argmax is noise.
        "signal": max_gain > 0 and localized_gain > 0,
        "max_gain": max_gain, "localized_gain": localized_gain,
        "criterion": "argmax over layers of mean_pairs(P(target answer | patched) - P(target answer | unpatched))",
        "config": {**result.config, "layers": result.layers, "max_pairs_per_country": max_pairs},
        "per_layer": [row for row in table if row["country"] == "all"],
        "pairs": [{"question_id": p.question_id, "country": p.country,
                   "p_target": result.p_target[i].tolist(), "baseline_target": float(result.baseline_target[i]),
                   "source_target": float(result.source_target[i])} for i, p in enumerate(result.pairs)],
    }
    write_text(out / "layers.json", json.dumps(summary, indent=2) + "\n")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for country in ["all", *summary["countries"]]:
        rows = [row for row in table if row["country"] == country]
        line, = ax.plot([r["layer"] for r in rows], [r["p_target"] for r in rows], marker="o", ms=3,
                        lw=2.5 if country == "all" else 1, label=f"{country}: P(country answer)")
        ax.axhline(rows[0]["baseline_target"], color=line.get_color(), ls=":", lw=1)
    overall = summary["per_layer"]
    ax.plot([r["layer"] for r in overall], [r["p_western"] for r in overall], color="grey", ls="--",
            label="all: P(Western answer)")
    ax.axvline(result.suggested_layer, color="black", lw=0.8)
    ax.set(xlabel="patched layer (last prompt token)", ylabel="mean probability among the options",
           title=f"Activation patching, localized → non-localized ({model_name}); dotted: unpatched")
    ax.legend(fontsize=7)
    save_figure(fig, out / "layers.png")
    if not summary["signal"]:
        print(f"warning: no signal (max patching gain {max_gain:+.4f}, localized prompt vs non-localized "
              f"{localized_gain:+.4f}): the suggested layer is not meaningful")
    return summary
