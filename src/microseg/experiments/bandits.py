"""Multi-armed bandits over variants or micro-segments: Thompson sampling and UCB1.

Both policies are seeded (``random_state``) and refuse to reallocate before every arm has
``min_exposures`` pulls: until then arms are served round-robin, least-exposed first, so an
early lucky click cannot starve an arm. :class:`SegmentedBandit` keeps one independent policy
per micro-segment (a simple contextual bandit over segment membership).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


class _Policy:
    """Shared bookkeeping: arm names, pulls, rewards, warm-up."""

    def __init__(
        self, *, arms: Sequence[str], min_exposures: int = 0, random_state: int | None = None
    ) -> None:
        self.arms = arms
        self.min_exposures = min_exposures
        self.random_state = random_state
        self._init()

    def _init(self) -> None:
        arms = list(self.arms)
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError(f"need at least two distinct arms, got {arms}")
        if self.min_exposures < 0:
            raise ValueError(f"min_exposures must be >= 0, got {self.min_exposures}")
        self.arms_ = arms
        self._index = {a: i for i, a in enumerate(arms)}
        self.pulls_ = np.zeros(len(arms), dtype=np.int64)
        self.rewards_ = np.zeros(len(arms), dtype=float)
        self.rng_ = np.random.default_rng(self.random_state)

    def _warmup(self) -> int | None:
        short = np.flatnonzero(self.pulls_ < self.min_exposures)
        if short.size:
            return int(short[np.argmin(self.pulls_[short])])
        return None

    def select(self) -> str:
        """Name of the arm to serve next."""
        i = self._warmup()
        return self.arms_[self._choose() if i is None else i]

    def _choose(self) -> int:
        raise NotImplementedError

    def update(self, arm: str, reward: float) -> None:
        """Record the reward (0/1 for Thompson sampling) of one pull."""
        if arm not in self._index:
            raise ValueError(f"unknown arm {arm!r}; arms: {self.arms_}")
        i = self._index[arm]
        self.pulls_[i] += 1
        self.rewards_[i] += float(reward)

    @property
    def means_(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pulls_ > 0, self.rewards_ / np.maximum(self.pulls_, 1), np.nan)


class ThompsonSampling(_Policy):
    """Beta-Bernoulli Thompson sampling: serve the arm with the largest posterior draw."""

    def __init__(
        self,
        *,
        arms: Sequence[str],
        prior: tuple[float, float] = (1.0, 1.0),
        min_exposures: int = 0,
        random_state: int | None = None,
    ) -> None:
        self.prior = prior
        super().__init__(arms=arms, min_exposures=min_exposures, random_state=random_state)

    def _choose(self) -> int:
        a = self.prior[0] + self.rewards_
        b = self.prior[1] + self.pulls_ - self.rewards_
        return int(np.argmax(self.rng_.beta(a, b)))

    def update(self, arm: str, reward: float) -> None:
        if reward not in (0, 1, True, False):
            raise ValueError(f"Thompson sampling needs 0/1 rewards, got {reward!r}")
        super().update(arm, reward)

    def allocation(self, draws: int = 10_000) -> dict[str, float]:
        """Probability that each arm would be served now (posterior chance of being best)."""
        a = self.prior[0] + self.rewards_
        b = self.prior[1] + self.pulls_ - self.rewards_
        samples = self.rng_.beta(a[:, None], b[:, None], size=(len(a), draws))
        share = np.bincount(samples.argmax(axis=0), minlength=len(a)) / draws
        return dict(zip(self.arms_, share.tolist(), strict=True))


class UCB1(_Policy):
    """UCB1 (Auer et al. 2002): mean + c·sqrt(2 ln t / n); ties broken at random."""

    def __init__(
        self,
        *,
        arms: Sequence[str],
        c: float = 1.0,
        min_exposures: int = 1,
        random_state: int | None = None,
    ) -> None:
        self.c = c
        super().__init__(arms=arms, min_exposures=max(min_exposures, 1), random_state=random_state)

    def _choose(self) -> int:
        t = self.pulls_.sum()
        ucb = self.rewards_ / self.pulls_ + self.c * np.sqrt(2 * math.log(t) / self.pulls_)
        best = np.flatnonzero(ucb == ucb.max())
        return int(self.rng_.choice(best))


class SegmentedBandit:
    """One independent policy per micro-segment, created on first use by ``factory``."""

    def __init__(self, factory: Callable[[str], _Policy]) -> None:
        self.factory = factory
        self.policies_: dict[str, _Policy] = {}

    def _policy(self, segment: str) -> _Policy:
        if segment not in self.policies_:
            self.policies_[segment] = self.factory(segment)
        return self.policies_[segment]

    def select(self, segment: str) -> str:
        return self._policy(segment).select()

    def update(self, segment: str, arm: str, reward: float) -> None:
        self._policy(segment).update(arm, reward)


@dataclass(frozen=True)
class SimulationResult:
    """Arms chosen and rewards obtained over a simulated horizon on planted arm rates."""

    arms: tuple[str, ...]
    choices: np.ndarray  # index of the arm served at each step
    rewards: np.ndarray
    regret: np.ndarray  # cumulative expected regret

    def share(self, arm: str, last: int | None = None) -> float:
        """Share of pulls of ``arm`` (over the last ``last`` steps)."""
        ch = self.choices if last is None else self.choices[-last:]
        return float((ch == self.arms.index(arm)).mean())


def simulate(
    policy: _Policy, rates: Mapping[str, float], horizon: int, random_state: int | None = None
) -> SimulationResult:
    """Run ``policy`` against Bernoulli arms with the planted ``rates``."""
    if set(rates) != set(policy.arms_):
        raise ValueError(f"rates {sorted(rates)} do not match policy arms {policy.arms_}")
    rng = np.random.default_rng(random_state)
    p = np.array([rates[a] for a in policy.arms_])
    choices = np.empty(horizon, dtype=np.int64)
    rewards = np.empty(horizon)
    for t in range(horizon):
        arm = policy.select()
        i = policy._index[arm]
        r = float(rng.random() < p[i])
        policy.update(arm, r)
        choices[t], rewards[t] = i, r
    regret = np.cumsum(p.max() - p[choices])
    return SimulationResult(tuple(policy.arms_), choices, rewards, regret)
