"""The residual-norm cache (the unit of relative steering): a public, invalidatable :class:`NormCache` keyed
by site, positions and weights version, and the hook through which the recording layer installs the
measurement (``set_norm_measure``), so this package never imports it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..sites import Site


#: cache of norms; the recording layer above it owns the measurement, so this module never imports it.
_NORM_MEASURE: Callable[[Any, Site, str], float] | None = None


def set_norm_measure(measure: Callable[[Any, Site, str], float]) -> None:
    """Install the residual-norm measurement :meth:`PersonaModel.residual_norm` uses (and caches)."""
    global _NORM_MEASURE
    _NORM_MEASURE = measure


class NormCache:
    """Measured residual-stream norms (the unit of relative steering), keyed by (site, positions, weights key).

    Public and invalidatable: :meth:`clear` forgets everything, :meth:`invalidate` the entries of one site.
    Entries of other weights are never served (the key holds :meth:`PersonaModel.weights_fingerprint`).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Site, str, str], float] = {}

    def get(self, site: Site, positions: str, weights: str) -> float | None:
        return self._entries.get((site, positions, weights))

    def put(self, site: Site, positions: str, weights: str, value: float) -> None:
        self._entries[(site, positions, weights)] = float(value)

    def invalidate(self, site: Site | None = None) -> None:
        """Forget the entries of ``site`` (all sites when ``None``)."""
        for k in [k for k in self._entries if site is None or k[0] == site]:
            del self._entries[k]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
