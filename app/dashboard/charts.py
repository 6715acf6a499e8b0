"""The overview's chart: spend per day (UTC) stacked by model, as inline SVG.

matplotlib draws it on the server, as `tokenmeter usage report --format html` does
(app/report.py): the same long-kept library and one renderer, no JavaScript chart library to
vendor, nothing fetched by the browser. Text stays text in the SVG (`svg.fonttype: none`), so the
exact legend totals are readable and searchable in the page. Bars are sized with floats; every
number printed is the exact Decimal string.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable
from datetime import date
from decimal import Decimal

from app.report import stacked_bars

# More models than this are drawn as the top ones plus "other" (a legend of 40 entries is noise;
# the models page and the SQL editor have every model's number).
MAX_SERIES = 8


def warm_up() -> None:
    """Import matplotlib's figure and SVG backend ahead of the first chart."""
    import matplotlib.backends.backend_svg  # noqa: F401
    import matplotlib.figure  # noqa: F401


# Drawing takes matplotlib most of a second on a busy machine: the overview keeps the last few
# charts by their data, so reloading a page whose numbers did not change skips the drawing.
_CACHE_SIZE = 8
_cache: OrderedDict[Hashable, str] = OrderedDict()
_cache_lock = threading.Lock()


def spend_svg(days: list[date], by_model: dict[str, dict[date, Decimal]], currency: str) -> str:
    """A stacked bar chart of `by_model` (model → day → cost, largest model first) over `days`,
    drawn once per distinct data."""
    key = (
        tuple(days),
        currency,
        tuple((model, tuple(sorted(per_day.items()))) for model, per_day in by_model.items()),
    )
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    svg = _draw(days, by_model, currency)
    with _cache_lock:
        _cache[key] = svg
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return svg


def _draw(days: list[date], by_model: dict[str, dict[date, Decimal]], currency: str) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    series = dict(list(by_model.items())[:MAX_SERIES])
    rest = list(by_model.items())[MAX_SERIES:]
    if rest:
        other: dict[date, Decimal] = {}
        for _, per_day in rest:
            for day, cost in per_day.items():
                other[day] = other.get(day, Decimal(0)) + cost
        series[f"{len(rest)} other models"] = other

    fig = Figure(figsize=(11, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    positions = list(range(len(days)))
    bottoms = stacked_bars(ax, days, series, currency)
    step = max(1, len(days) // 10)
    ax.set_xticks(positions[::step], [d.strftime("%b %d") for d in days[::step]])
    ax.set_ylabel(currency)
    ax.set_ylim(0, max(bottoms) * 1.1 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    if series:
        ax.legend(fontsize=8, loc="upper left", frameon=False)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    # Inline in HTML: no XML prolog or DOCTYPE (it names a URL), no RDF metadata (it holds URLs).
    svg = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.strip()
