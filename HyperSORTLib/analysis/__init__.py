"""Audit of a trained run: plots, behaviour of decoded clusters, the audit report.

The latent-map maths it builds on (clusters, densities, suspicion scores) lives below it, in
:mod:`HyperSORTLib.latentmap`. The plotting helpers and the run audit (:func:`analyze_run`,
which needs torch and the data readers) are loaded on first use so that importing this package
does not pull in matplotlib or torch.

Example:
    >>> from HyperSORTLib.analysis import analyze_run  # doctest: +SKIP
    >>> result = analyze_run("runs/liver")  # writes runs/liver/analysis/report.html  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_PLOT_NAMES = ("plot_latent_map", "plot_latent_maps", "plot_cluster_map", "plot_probe_overlays", "project_2d")
_AUDIT_NAMES = ("AnalysisResult", "analyze_run")

__all__ = [*_PLOT_NAMES, *_AUDIT_NAMES]


def __getattr__(name: str) -> Any:
    if name in _PLOT_NAMES:
        from HyperSORTLib.analysis import plots

        return getattr(plots, name)
    if name in _AUDIT_NAMES:
        from HyperSORTLib.analysis import audit

        return getattr(audit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
