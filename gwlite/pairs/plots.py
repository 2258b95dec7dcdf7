r"""Pictures of a :class:`~gwlite.pairs.result.PairwiseResult` (matplotlib, imported on use).

* :func:`interval_heatmap`: one matrix with the upper bounds above the diagonal and the
  lower bounds below it (same colour scale), next to the relative gap
  :math:`(U - L) / U`;
* :func:`mds` and :func:`mds_plot`: a classical (Torgerson) multidimensional scaling
  of the distances :math:`U^{1/r}` (:math:`r = 2` for the square loss, whose GW value is
  a squared distance in POT's convention), i.e. the top eigenvectors of
  :math:`-\tfrac12 J D^{\circ 2} J` with :math:`J = I - \mathbf 1 \mathbf 1^\top / N`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interval_heatmap", "mds", "mds_plot"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - the extra is missing
        from gwlite.errors import GWInputError

        raise GWInputError(
            "plots need matplotlib: pip install matplotlib (gwlite's 'plot' extra)"
        ) from err
    return plt


def interval_heatmap(result, *, order=None, path=None, title=None):
    """Heatmap of the intervals: upper bounds above the diagonal, lower bounds below.

    Parameters
    ----------
    result : PairwiseResult
    order : array of int, optional
        Display order of the spaces (e.g. by size).
    path : path, optional
        Save the figure there (PNG) and close it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    n = result.n_spaces
    order = np.arange(n) if order is None else np.asarray(order)
    L = result.lower[np.ix_(order, order)]
    U = result.upper[np.ix_(order, order)]
    both = np.where(np.triu(np.ones((n, n), dtype=bool)), U, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(U > 0, (U - L) / U, 0.0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    im = axes[0].imshow(both, cmap="viridis", interpolation="nearest")
    axes[0].set_title("GW interval: upper above, lower below the diagonal")
    fig.colorbar(im, ax=axes[0], shrink=0.85)
    im = axes[1].imshow(gap, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("relative gap (upper - lower) / upper")
    fig.colorbar(im, ax=axes[1], shrink=0.85)
    for ax in axes:
        ax.set_xlabel("space")
        ax.set_ylabel("space")
    fig.suptitle(title or f"{result.method}, {result.loss_fun}: {n} spaces")
    return _finish(fig, path, plt)


def mds(result, dim: int = 2) -> np.ndarray:
    """Classical MDS coordinates ``(N, dim)`` of the upper bounds (module docstring).

    Negative eigenvalues (the upper bounds need not be Euclidean distances) are dropped.
    """
    r = 2 if result.loss_fun == "square_loss" else 1
    D = np.maximum(np.asarray(result.upper, dtype=np.float64), 0.0) ** (1.0 / r)
    D = (D + D.T) / 2
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D * D) @ J
    vals, vecs = np.linalg.eigh(B)
    top = np.argsort(vals)[::-1][:dim]
    return vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))


def mds_plot(result, *, color=None, color_label=None, path=None, title=None):
    """Scatter plot of the 2-D MDS embedding of the upper bounds.

    Parameters
    ----------
    result : PairwiseResult
    color : array, optional
        One value per space (e.g. its number of nodes).
    path : path, optional
        Save the figure there (PNG) and close it.
    """
    plt = _pyplot()
    X = mds(result, 2)
    fig, ax = plt.subplots(figsize=(5.6, 4.6), constrained_layout=True)
    sc = ax.scatter(X[:, 0], X[:, 1], c=color, s=12, cmap="viridis", alpha=0.8)
    if color is not None:
        fig.colorbar(sc, ax=ax, label=color_label or "")
    ax.set_title(title or f"MDS of the upper bounds ({result.method})")
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    return _finish(fig, path, plt)


def _finish(fig, path, plt):
    if path is not None:
        from gwlite.atomic import atomic_open

        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
    return fig
