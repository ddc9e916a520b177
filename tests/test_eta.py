"""The time left shown for a job: the whole run's rate, withheld at first, never leaping."""

from __future__ import annotations

import numpy as np
import pytest

from landscape_core.eta import EtaSmoother

POLL = 0.5  # seconds between two looks of the progress widget


def run(progress_at, total: int, seconds: float, **kwargs) -> tuple[np.ndarray, list, list]:
    """Poll an ``EtaSmoother`` every ``POLL`` s of a job whose progress at time t is ``progress_at(t)``."""
    eta = EtaSmoother(**kwargs)
    times = np.arange(POLL, seconds, POLL)
    shown, raw = [], []
    for t in times:
        done = int(progress_at(t))
        shown.append(eta.update(done, total, float(t)))
        raw.append(EtaSmoother.raw(done, total, float(t)))
    return times, shown, raw


def test_constant_rate_counts_down_with_the_clock_and_is_right():
    times, shown, _ = run(lambda t: 10 * t, total=3000, seconds=200)  # 10 points a second: done at 300 s
    values = np.array([np.nan if v is None else v for v in shown])
    assert np.isnan(values[0])  # nothing shown in the first seconds (warm-up)
    known = ~np.isnan(values)
    np.testing.assert_allclose(values[known], 300 - times[known], rtol=0.02, atol=1.0)
    assert np.all(np.diff(values[known]) <= 0)  # always counting down


def test_a_job_whose_rate_changes_moves_the_estimate_gradually():
    """The case a person saw: 11.9, then 18.7, then 3.5 minutes, as parts of different speeds ran.

    Part one is budgeted 400 units at 1 unit/s but stops after 167 (Lanczos converged), so the
    count leaps to 400; the rest, 287 units, runs at 4 units/s.
    """

    def progress(t):
        return t if t < 167 else 400 + min(287, 4 * (t - 167))

    times, shown, raw = run(progress, total=687, seconds=238)
    shown, raw = np.array(shown, dtype=float), np.array(raw, dtype=float)
    known = ~np.isnan(shown)
    # the raw whole-run estimate leaps by minutes between two polls...
    assert np.nanmax(np.abs(np.diff(raw))) > 60
    # ...the shown one moves, besides counting down, by at most 4% between two polls
    values = shown[known]
    steps = np.diff(values) + POLL
    assert np.all(np.abs(steps) <= 0.04 * values[:-1] + 1.0)
    assert np.abs(np.diff(raw[known]) + POLL).max() > 0.5 * raw[known].max()  # where the raw one halves
    # after the leap it falls steadily and catches up with the new estimate within a minute
    after = times[known] > 168
    assert np.all(np.diff(values[after]) < 0)
    assert abs(values[-1] - raw[known][-1]) < 15


def test_nothing_is_guessed_before_the_floor_and_done_is_zero():
    eta = EtaSmoother(min_elapsed=2.0, min_fraction=0.05)
    assert eta.update(0, 100, 5.0) is None  # nothing done yet
    assert eta.update(3, 100, 5.0) is None  # under 5% of the work
    assert eta.update(10, 100, 1.0) is None  # under 2 s: warm-up
    assert eta.update(10, 100, 3.0) == pytest.approx(27.0)
    assert eta.update(100, 100, 4.0) == 0.0


def test_a_new_total_starts_over():
    eta = EtaSmoother(min_elapsed=0.0)
    assert eta.update(50, 100, 10.0) == pytest.approx(10.0)
    assert eta.update(50, 1000, 10.5) == pytest.approx(10.5 * 950 / 50)  # no blending with the old job


@pytest.mark.parametrize("kwargs", [{"tau": 0}, {"min_elapsed": -1}, {"min_fraction": 1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="need tau > 0"):
        EtaSmoother(**kwargs)
