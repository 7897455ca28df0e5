"""The ``gps`` generator: a position ``{"lat": .., "lon": ..}`` following a route or wandering around a point.

Route mode moves along great-circle segments at ``speedKmh`` over logical time, so the position at ``t`` is
exact whatever the reading interval. Random-walk mode takes a step of ``stepM`` metres in a random direction
per reading and never leaves the circle of ``radiusM`` metres around ``center``.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from pathlib import Path
from typing import Any

from iotix.generate._spec import SpecReader
from iotix.generate._values import show
from iotix.generate.base import Generator

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
MODES = ("route", "randomWalk")
_ROUTE_KEYS = ("mode", "route", "speedKmh", "loop")
_WALK_KEYS = ("mode", "center", "radiusM", "stepM")

Point = tuple[float, float]
_Segment = tuple[float, float, float, float, float, float, float, float]


def _unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    phi, lam = math.radians(lat), math.radians(lon)
    return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))


def central_angle(a: Point, b: Point) -> float:
    """The angle in radians between two (lat, lon) points (haversine, stable for short distances)."""
    phi1, phi2 = math.radians(a[0]), math.radians(b[0])
    dphi = phi2 - phi1
    dlam = math.radians(b[1] - a[1])
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2.0 * math.asin(min(1.0, math.sqrt(h)))


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres between two (lat, lon) points."""
    return EARTH_RADIUS_M * central_angle(a, b)


def _position(lat: float, lon: float, precision: int | None) -> dict[str, float]:
    if precision is not None:
        return {"lat": round(lat, precision), "lon": round(lon, precision)}
    return {"lat": lat, "lon": lon}


class RouteGenerator(Generator):
    """Position along the route after ``speed * t`` metres (looping, or stopping at the last point)."""

    __slots__ = ("_corners", "_end", "_loop", "_precision", "_segments", "_speed", "_starts", "_total")

    def __init__(self, points: list[Point], speed_kmh: float, loop: bool, precision: int | None) -> None:
        if loop and points[-1] != points[0]:
            points = [*points, points[0]]  # close the loop: drive back to the start
        segments: list[_Segment] = []
        starts: list[float] = []
        corners: list[Point] = []
        total = 0.0
        for a, b in itertools.pairwise(points):
            delta = central_angle(a, b)
            if delta < 1e-12:
                continue  # repeated point
            starts.append(total)
            corners.append(a)
            segments.append((*_unit_vector(*a), *_unit_vector(*b), delta, 1.0 / math.sin(delta)))
            total += EARTH_RADIUS_M * delta
        self._segments = tuple(segments)
        self._starts = tuple(starts)
        self._corners = tuple(corners)
        self._total = total
        self._end = points[-1]
        self._speed = speed_kmh / 3.6
        self._loop = loop
        self._precision = precision

    def next(self, t: float) -> Any:
        travelled = self._speed * t
        if self._total <= 0.0:
            return _position(*self._end, self._precision)
        if self._loop:
            travelled %= self._total
        elif travelled >= self._total:
            return _position(*self._end, self._precision)
        index = bisect_right(self._starts, travelled) - 1
        ax, ay, az, bx, by, bz, delta, inv_sin = self._segments[index]
        fraction = (travelled - self._starts[index]) / (EARTH_RADIUS_M * delta)
        if fraction <= 0.0:  # exactly on a route point: return it as written, without rounding noise
            return _position(*self._corners[index], self._precision)
        wa = math.sin((1.0 - fraction) * delta) * inv_sin
        wb = math.sin(fraction * delta) * inv_sin
        x, y, z = wa * ax + wb * bx, wa * ay + wb * by, wa * az + wb * bz
        lat = math.degrees(math.atan2(z, math.hypot(x, y)))
        lon = math.degrees(math.atan2(y, x))
        return _position(lat, lon, self._precision)


class GpsWalkGenerator(Generator):
    """``center`` first, then steps of ``step`` metres in random directions, kept within ``radius``."""

    __slots__ = ("_east", "_lat0", "_lon0", "_lon_scale", "_north", "_precision", "_radius", "_rng", "_step")

    def __init__(self, center: Point, radius_m: float, step_m: float, rng: random.Random, precision: int | None):
        self._lat0, self._lon0 = center
        self._lon_scale = 1.0 / max(math.cos(math.radians(center[0])), 1e-6)
        self._radius = radius_m
        self._step = step_m
        self._east = 0.0
        self._north = 0.0
        self._rng = rng
        self._precision = precision

    def next(self, t: float) -> Any:
        east, north = self._east, self._north
        lat = self._lat0 + math.degrees(north / EARTH_RADIUS_M)
        lon = self._lon0 + math.degrees(east / EARTH_RADIUS_M) * self._lon_scale
        lat = max(-90.0, min(90.0, lat))
        if not -180.0 <= lon <= 180.0:
            lon = (lon + 180.0) % 360.0 - 180.0
        angle = 2.0 * math.pi * self._rng.random()
        east += self._step * math.cos(angle)
        north += self._step * math.sin(angle)
        reach = math.hypot(east, north)
        if reach > self._radius:  # pulled back onto the boundary circle
            scale = self._radius / reach
            east *= scale
            north *= scale
        self._east, self._north = east, north
        return _position(lat, lon, self._precision)


def make_gps(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``gps``: mode ``route`` (default when ``route`` is given) or ``randomWalk``."""
    r.field_type_in(field_type, ("object",), 'positions {"lat": .., "lon": ..}')
    precision = r.precision()
    mode = r.spec.get("mode", "route" if r.has("route") else "randomWalk")
    if mode == "route":
        r.known(_ROUTE_KEYS)
        return _make_route(r, precision)
    if mode == "randomWalk":
        r.known(_WALK_KEYS)
        return _make_walk(r, rng, precision)
    r.problem("mode", f"unknown gps mode {show(mode)} (expected one of: {', '.join(MODES)})")
    return None


def _make_route(r: SpecReader, precision: int | None) -> Generator | None:
    route = r.sequence("route", required=True)
    points: list[Point] = []
    if route is not None:
        if len(route) < 2:
            r.problem("route", f"needs at least 2 points [lat, lon], got {len(route)}")
        for i, item in enumerate(route):
            point = _read_point(r, f"route[{i}]", item)
            if point is not None:
                points.append(point)
        for i in range(1, len(points)):
            if abs(central_angle(points[i - 1], points[i]) - math.pi) < 1e-9:
                r.problem(f"route[{i}]", "is antipodal to the previous point: the path between them is undefined")
    speed = r.number("speedKmh", 50.0)
    r.positive("speedKmh", speed)
    loop = r.boolean("loop", True)
    if not r.ok:
        return None
    assert speed is not None
    return RouteGenerator(points, float(speed), loop, precision)


def _make_walk(r: SpecReader, rng: random.Random, precision: int | None) -> Generator | None:
    center = None
    if not r.has("center"):
        r.problem("center", "is required for gps mode 'randomWalk' ([lat, lon])")
    else:
        center = _read_point(r, "center", r.spec["center"])
    radius = r.number("radiusM", 1000.0)
    r.positive("radiusM", radius)
    step = r.number("stepM", 10.0)
    r.positive("stepM", step)
    if not r.ok:
        return None
    assert center is not None and radius is not None and step is not None
    return GpsWalkGenerator(center, float(radius), float(step), rng, precision)


def _read_point(r: SpecReader, path: str, item: Any) -> Point | None:
    """A ``[lat, lon]`` pair within range, or None (problem recorded)."""
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        r.problem(path, f"must be a [lat, lon] pair, got {show(item)}")
        return None
    lat, lon = item
    ok = True
    for name, value, limit in (("latitude", lat, 90), ("longitude", lon, 180)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            r.problem(path, f"{name} must be a number, got {show(value)}")
            ok = False
        elif not -limit <= value <= limit:
            r.problem(path, f"{name} {show(value)} out of range [-{limit}, {limit}]")
            ok = False
    return (float(lat), float(lon)) if ok else None
