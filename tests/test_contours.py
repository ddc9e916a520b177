"""Contour lines (contourpy) against exact geometry."""

import numpy as np
import pytest

from landscape_core.contours import auto_levels, contour_lines, contour_segments


def _endpoints(segments):
    return segments.reshape(-1, 2)


def test_linear_surface_contours_are_exact():
    # On a plane z = a x + b y + c, linear interpolation along edges is exact.
    x = np.linspace(-1, 1, 17)
    y = np.linspace(-2, 1, 13)
    a, b, c = 0.7, -1.3, 0.2
    z = a * x[:, None] + b * y[None, :] + c
    for level, segs in contour_segments(x, y, z, [-0.5, 0.0, 1.1]).items():
        assert len(segs) > 0
        p = _endpoints(segs)
        np.testing.assert_allclose(a * p[:, 0] + b * p[:, 1] + c, level, atol=1e-12)
        assert np.all((p[:, 0] >= x[0]) & (p[:, 0] <= x[-1]) & (p[:, 1] >= y[0]) & (p[:, 1] <= y[-1]))


def test_radial_bowl_contours_lie_on_circles_and_close():
    x = np.linspace(-1.5, 1.5, 61)
    h = x[1] - x[0]
    z = x[:, None] ** 2 + x[None, :] ** 2
    for r in (0.52, 0.83, 1.21):  # no grid vertex lies exactly on these circles
        segs = contour_segments(x, x, z, [r**2])[r**2]
        radius = np.linalg.norm(_endpoints(segs), axis=1)
        # linear interpolation of r^2 along an edge of length h errs by at most h^2 / (8 r)
        assert np.max(np.abs(radius - r)) <= h**2 / (8 * r) + 1e-12
        # a closed loop: every endpoint is shared by exactly two segments
        keys, counts = np.unique(np.round(_endpoints(segs), 12), axis=0, return_counts=True)
        assert np.all(counts == 2)
        # total length approximates the circumference
        length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1).sum()
        assert abs(length - 2 * np.pi * r) < 0.01 * 2 * np.pi * r


def test_values_indexed_x_first():
    # z depends on x only: contours are vertical lines x = level.
    x = np.linspace(0, 1, 5)
    y = np.linspace(0, 2, 7)
    z = np.repeat(x[:, None], len(y), axis=1)
    segs = contour_segments(x, y, z, [0.3])[0.3]
    np.testing.assert_allclose(_endpoints(segs)[:, 0], 0.3, atol=1e-15)
    assert len(segs) == len(y) - 1


def test_nan_cells_get_no_segments():
    x = np.linspace(-1, 1, 11)
    z = x[:, None] + 0 * x[None, :]
    z[5, :] = np.nan  # the column at x = 0 diverged
    segs = contour_segments(x, x, z, [0.0])[0.0]
    assert len(segs) == 0
    segs = contour_segments(x, x, z, [0.55])[0.55]
    assert len(segs) == 10  # unaffected far from the NaN column


def test_saddle_cell_is_resolved_by_cell_mean():
    x = np.array([0.0, 1.0])
    z = np.array([[1.0, 0.0], [0.0, 1.0]])  # corners (0,0),(1,1) high, (1,0),(0,1) low; cell mean 0.5
    # mean 0.5 above the level: the high corners are joined, so the segments cut off the low corners
    mids = contour_segments(x, x, z, [0.4])[0.4].mean(axis=1)
    assert sorted(map(tuple, np.round(mids, 12))) == [(0.2, 0.8), (0.8, 0.2)]
    # mean below the level: the low corners are joined, the segments cut off the high corners
    mids = contour_segments(x, x, z, [0.6])[0.6].mean(axis=1)
    assert sorted(map(tuple, np.round(mids, 12))) == [(0.2, 0.2), (0.8, 0.8)]


def test_bowl_contour_is_one_closed_polyline_per_level():
    x = np.linspace(-1.5, 1.5, 101)
    z = x[:, None] ** 2 + x[None, :] ** 2
    lines = contour_lines(x, x, z, [0.25, 1.0])
    for level, polylines in lines.items():
        assert len(polylines) == 1
        (line,) = polylines
        np.testing.assert_array_equal(line[0], line[-1])  # closed
        r = np.sqrt(level)
        np.testing.assert_allclose(np.linalg.norm(line, axis=1), r, atol=(x[1] - x[0]) ** 2 / (8 * r) + 1e-12)


def test_contours_never_enter_diverged_cells():
    x = np.linspace(-1, 1, 21)
    z = x[:, None] ** 2 + x[None, :] ** 2
    assert len(contour_lines(x, x, z, [0.09])[0.09]) == 1  # the circle r = 0.3 around the centre
    z[12:15, 9:12] = np.inf  # diverged corners: cells 11..14 (x 0.1..0.5) x 8..11 (y -0.2..0.2) masked
    lines = contour_lines(x, x, z, [0.09])[0.09]
    assert len(lines) == 1 and not np.array_equal(lines[0][0], lines[0][-1])  # the circle is cut open
    for line in lines:
        inside = (line[:, 0] > x[11] + 1e-12) & (line[:, 0] < x[15] - 1e-12) & (np.abs(line[:, 1]) < x[12] - 1e-12)
        assert not inside.any()


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="values must have shape"):
        contour_segments([0, 1, 2], [0, 1], np.zeros((2, 3)), [0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        contour_segments([0, 0, 1], [0, 1], np.zeros((3, 2)), [0.5])


def test_auto_levels():
    np.testing.assert_allclose(auto_levels(np.array([0.0, 10.0]), 4), [2, 4, 6, 8])
    np.testing.assert_allclose(auto_levels(np.array([1.0, 1e4, np.nan]), 3, log=True), [10, 100, 1000])
    assert auto_levels(np.ones(5), 3).size == 0
