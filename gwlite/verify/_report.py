"""What a person reads: terminal tables, two CSV files and one PNG figure."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from gwlite.atomic import atomic_open

__all__ = ["render", "write_outputs", "tightness"]

SHORT = {
    "erdos_renyi": "ER",
    "sbm": "SBM",
    "barabasi_albert": "BA",
    "random_geometric": "RGG",
    "tree": "tree",
    "regular": "regular",
    "tree_metric": "treemet",
    "gram": "gram",
    "euclidean": "euclid",
    "coactivation": "coact",
}
LOWER_METHODS = ("sorted", "flb", "slb", "tlb", "rank_one", "exact", "rlt", "sdp")
UPPER_METHODS = ("sorted", "proximal", "cg", "entropic", "rank_one", "exact", "rlt", "sdp")
ROW_FIELDS = (
    "family",
    "n",
    "seed",
    "loss",
    "method",
    "lower",
    "upper",
    "value",
    "time_s",
    "certified",
    "converged",
    "reference",
    "reference_kind",
    "gw_lower",
    "gw_positive",
    "lower_ratio",
    "upper_ratio",
    "violations",
    "error",
)
CHECK_FIELDS = ("family", "n", "seed", "loss", "check", "method", "passed", "detail")


def _present(rows, key) -> list:
    seen: list = []
    for row in rows:
        if row[key] not in seen:
            seen.append(row[key])
    return seen


def tightness(rows, loss: str, which: str) -> dict[tuple[str, str], float]:
    """Mean of ``which`` (``"lower_ratio"``/``"upper_ratio"``) by (method, family)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        value = row[which]
        if row["loss"] == loss and np.isfinite(value):
            groups.setdefault((row["method"], row["family"]), []).append(value)
    return {key: float(np.mean(vals)) for key, vals in groups.items()}


def _table(title: str, header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in [header] + body) for k in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if k == 0 else f"{{:>{w}}}" for k, w in enumerate(widths))
    lines = [title, fmt.format(*header), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in body]
    return "\n".join(lines)


def _ratio_table(rows, loss: str, which: str, methods, families) -> str | None:
    means = tightness(rows, loss, which)
    body = []
    for method in methods:
        cells = [means.get((method, f)) for f in families]
        if any(c is not None for c in cells):
            body.append([method] + ["-" if c is None else f"{c:.2f}" for c in cells])
    if not body:
        return None
    what = "lower / GW (1 = tight, 0 = useless)" if which == "lower_ratio" else "upper / GW"
    header = ["method"] + [SHORT.get(f, f) for f in families]
    return _table(f"{loss}: {what}, mean over instances with GW > 0", header, body)


def _reference_line(rows, loss: str, families, settings: dict) -> str:
    inst = {}
    for row in rows:
        if row["loss"] == loss:
            inst[(row["family"], row["n"], row["seed"])] = row["reference_kind"]
    cells = []
    for f in families:
        kinds = [k for (fam, _, _), k in inst.items() if fam == f]
        exact = sum(k.startswith("exact") for k in kinds)
        relaxed = sum(k.startswith("sdp") for k in kinds)
        split = f" ({exact} exact + {relaxed} sdp)" if relaxed else ""
        cells.append(f"{SHORT.get(f, f)} {exact + relaxed}/{len(kinds)}{split}")
    if not settings.get("sdp_installed", True):
        sdp_note = "sdp not run: its solver is missing (pip install scs: gwlite's 'certify' extra)"
    elif settings.get("sdp_max_n", 0) <= 0:
        sdp_note = "sdp not run (sdp_max_n = 0)"
    else:
        where = ", where exact did not certify" if settings.get("sdp_only_uncertified") else ""
        sdp_note = f"sdp runs for n <= {settings['sdp_max_n']}{where}"
    return (
        f"{loss}: GW certified (exact optimum or sdp relaxation) in "
        + ", ".join(cells)
        + " instances;\n"
        "  elsewhere GW is unknown and the ratios divide by the best upper bound found\n"
        "  (so lower/GW understates the lower bounds and upper/GW is relative to the best).\n"
        f"  exact runs for n <= {settings['exact_max_n']}, {sdp_note}: their rows average "
        "those instances only."
    )


def _zero_bound_line(rows, loss: str) -> str | None:
    """Instances where the mean-row closed form is 0 although GW > 0 is known."""
    inst = {}
    for row in rows:
        if row["loss"] == loss and row["method"] == "sorted":
            inst[(row["family"], row["n"], row["seed"])] = row
    hits = [r for r in inst.values() if r["gw_positive"] and abs(r["lower"]) <= 1e-12]
    if not hits:
        return None
    fams = sorted({r["family"] for r in hits})
    best = max(r["gw_lower"] for r in hits)
    return (
        f"{loss}: the mean-row closed form is 0 while GW > 0 in {len(hits)} instance(s) "
        f"({', '.join(fams)}); GW > 0 is known from non-isomorphism or another bound; "
        f"the best lower bound found there is {best:.3g}"
        + (" (every lower bound is 0: GW > 0 but no bound shows it)" if best <= 1e-12 else "")
    )


def _time_table(rows) -> str:
    times: dict[str, list[float]] = {}
    for row in rows:
        if not row["error"]:
            times.setdefault(row["method"], []).append(row["time_s"] * 1e3)
    body = [[m, f"{np.median(t):.2f}", f"{np.max(t):.2f}", str(len(t))] for m, t in times.items()]
    return _table("time per method (ms)", ["method", "median", "max", "runs"], body)


def _check_table(report) -> str:
    body = [[name, str(count), str(bad)] for name, (count, bad) in report.check_summary().items()]
    return _table("checks", ["check", "evaluated", "violations"], body)


def render(report) -> str:
    """The full terminal report."""
    rows = report.rows
    families = _present(rows, "family")
    s = report.settings
    instances = len({(r["family"], r["n"], r["seed"], r["loss"]) for r in rows})
    parts = [
        f"gwlite verify: {instances} instances (families x sizes {list(s['sizes'])} x seeds "
        f"{list(s['seeds'])} x losses {list(s['losses'])}), exact up to n = "
        f"{s['exact_max_n']}, {report.elapsed_s:.1f} s"
    ]
    for loss in _present(rows, "loss"):
        parts.append(_reference_line(rows, loss, families, s))
        for which, methods in (("lower_ratio", LOWER_METHODS), ("upper_ratio", UPPER_METHODS)):
            table = _ratio_table(rows, loss, which, methods, families)
            if table:
                parts.append(table)
        line = _zero_bound_line(rows, loss)
        if line:
            parts.append(line)
    parts += [_time_table(rows), _check_table(report)]
    for v in report.violations[:20]:
        parts.append(
            f"VIOLATION {v['check']} [{v['method']}] on {v['family']} n={v['n']} "
            f"seed={v['seed']} {v['loss']}: {v['detail']}"
        )
    verdict = "OK" if report.ok else "FAILED"
    parts.append(f"{verdict}: {report.n_violations} violation(s) in {report.n_checks} checks")
    return "\n\n".join(parts)


# ---------------------------------------------------------------- files
def _atomic(path: Path, write) -> None:
    with atomic_open(path, "w", newline="") as handle:
        write(handle)


def _write_csv(path: Path, fields, rows) -> None:
    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in fields})

    _atomic(path, write)


def _cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def write_outputs(report, out_dir) -> dict[str, str]:
    """``results.csv``, ``checks.csv`` and (with matplotlib) ``tightness.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.csv", "checks": out / "checks.csv"}
    _write_csv(paths["results"], ROW_FIELDS, report.rows)
    _write_csv(paths["checks"], CHECK_FIELDS, report.checks)
    figure = out / "tightness.png"
    if _write_figure(report, figure):
        paths["figure"] = figure
    return {k: str(v) for k, v in paths.items()}


def _heatmap(ax, rows, loss: str, which: str, methods, families) -> None:
    means = tightness(rows, loss, which)
    methods = [m for m in methods if any((m, f) in means for f in families)]
    grid = np.array([[means.get((m, f), np.nan) for f in families] for m in methods])
    if which == "lower_ratio":
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        title = f"{loss}: lower / GW (1 = tight)"
    else:
        shown = np.log2(np.where(grid > 0, grid, np.nan))
        image = ax.imshow(shown, vmin=0, vmax=2, cmap="magma_r", aspect="auto")
        title = f"{loss}: upper / GW (colour log2, 0 = tight)"
    for (a, b), value in np.ndenumerate(grid):
        if np.isfinite(value):
            # dark text on the light end of each colour map
            light = value > 0.6 if which == "lower_ratio" else value < 2.0
            color = "black" if light else "white"
            ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(families)), [SHORT.get(f, f) for f in families], rotation=45)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.04)


def _timing(ax, rows, loss: str) -> None:
    by_method: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if row["loss"] == loss and not row["error"]:
            by_method.setdefault(row["method"], {}).setdefault(row["n"], []).append(row["time_s"])
    for method, per_n in by_method.items():
        ns = sorted(per_n)
        ax.plot(ns, [1e3 * np.median(per_n[n]) for n in ns], marker="o", label=method)
    ax.set_yscale("log")
    ax.set_xticks(sorted({n for per_n in by_method.values() for n in per_n}))
    ax.set_xlabel("n")
    ax.set_ylabel("median time (ms)")
    ax.set_title(f"{loss}: time per method", fontsize=9)
    ax.legend(fontsize=7)


def _write_figure(report, path: Path) -> bool:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: skipping the figure (pip install matplotlib: gwlite's 'plot' extra)",
            stacklevel=3,
        )
        return False
    rows = report.rows
    losses, families = _present(rows, "loss"), _present(rows, "family")
    # a bare Figure on the Agg canvas: no pyplot, no global backend switch
    fig = Figure(figsize=(17, 4.6 * len(losses)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(losses), 3, squeeze=False)
    for k, loss in enumerate(losses):
        _heatmap(axes[k][0], rows, loss, "lower_ratio", LOWER_METHODS, families)
        _heatmap(axes[k][1], rows, loss, "upper_ratio", UPPER_METHODS, families)
        _timing(axes[k][2], rows, loss)
    verdict = "no violation" if report.ok else f"{report.n_violations} VIOLATIONS"
    fig.suptitle(f"gwlite verify: {verdict} in {report.n_checks} checks", fontsize=11)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return True
