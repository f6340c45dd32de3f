"""The phase schedule: noise → structure → detail, as a discrete name and smooth weights.

A step's position in the run is t = (step + 0.5) / total in (0, 1).  The schedule splits that
interval into three spans by two boundaries (default 0.2 and 0.6: noise 20 %, structure 40 %,
detail 40 %).  Besides the discrete phase, visuals get weights that sum to 1 and cross-fade
linearly over ``blend`` (a fraction of the run) centred on each boundary, so nothing cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

PHASE_NAMES = ("noise", "structure", "detail")


@dataclass(frozen=True)
class PhaseSchedule:
    """Fractions of the run given to each phase, and the cross-fade width around boundaries."""

    noise: float = 0.2
    structure: float = 0.4
    detail: float = 0.4
    blend: float = 0.1

    def __post_init__(self) -> None:
        parts = (self.noise, self.structure, self.detail)
        if any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
            raise ValueError(
                f"phase fractions must be ≥ 0 and sum to 1, got noise={self.noise} "
                f"structure={self.structure} detail={self.detail}"
            )
        if not 0.0 <= self.blend <= 0.5:
            raise ValueError(f"phase blend must be within 0..0.5, got {self.blend}")

    @property
    def boundaries(self) -> tuple[float, float]:
        return (self.noise, self.noise + self.structure)

    @staticmethod
    def position(step: int, total: int) -> float:
        """Where a step sits in the run, in (0, 1); steps are 0-based."""
        return (step + 0.5) / max(total, 1)

    def phase_at(self, step: int, total: int) -> str:
        t = self.position(step, total)
        b1, b2 = self.boundaries
        if t < b1:
            return PHASE_NAMES[0]
        if t < b2:
            return PHASE_NAMES[1]
        return PHASE_NAMES[2]

    def weights_at(self, step: int, total: int) -> tuple[float, float, float]:
        """Smooth (noise, structure, detail) weights summing to 1.

        Each boundary b contributes a ramp r(t) = clamp((t - b) / blend + 0.5, 0, 1); the
        weights are differences of the two ramps, so they always sum to exactly 1.
        """
        t = self.position(step, total)
        ramps = [_ramp(t, b, self.blend) for b in self.boundaries]
        w = (1.0 - ramps[0], ramps[0] - ramps[1], ramps[1])
        return tuple(max(0.0, x) for x in w)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {"noise": self.noise, "structure": self.structure, "detail": self.detail, "blend": self.blend}

    @classmethod
    def from_dict(cls, d: dict) -> "PhaseSchedule":
        return cls(**{k: float(d[k]) for k in ("noise", "structure", "detail", "blend") if k in d})


def _ramp(t: float, boundary: float, blend: float) -> float:
    if blend <= 0:
        return 1.0 if t >= boundary else 0.0
    return min(1.0, max(0.0, (t - boundary) / blend + 0.5))
