"""A small line plot for live values (losses, rates) painted with QPainter, for launcher pages.

:class:`CurvePlot` keeps named series of ``(x, y)`` points, each with its colour, and paints them on one
pair of axes labelled with the data's minimum and maximum, with a legend. Points whose ``y`` (or ``x``) is
not finite are kept out of the plot, so a metric that is NaN until its first value simply starts later.
No matplotlib: the plot repaints in the GUI thread in well under a millisecond per series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
"""Colours given to series added without one, in order."""


def _label(value: float) -> str:
    return f"{value:.3g}"


class CurvePlot(QWidget):
    """Named series of points on one pair of axes, with min/max labels and a legend.

    Args:
        series: ``(name, colour)`` pairs (or names, coloured from :data:`PALETTE`) known from the start;
            :meth:`add_point` adds unknown names on the fly.
        title: a line above the plot.
        x_label: the horizontal axis' name.

    Example:
        >>> plot = CurvePlot([("loss", "#d62728"), "accuracy"], x_label="step")
        >>> plot.add_point("loss", 1, 0.7)
    """

    def __init__(
        self,
        series: Sequence[str | tuple[str, str]] = (),
        *,
        title: str = "",
        x_label: str = "",
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self._series: dict[str, list[tuple[float, float]]] = {}
        self._colours: dict[str, QColor] = {}
        for item in series:
            name, colour = (item, None) if isinstance(item, str) else item
            self.add_series(name, colour)
        self.setMinimumSize(260, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # -- data -----------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._series)

    def add_series(self, name: str, colour: str | None = None) -> None:
        """A series ``name`` (no points yet); its colour from :data:`PALETTE` unless given."""
        if name not in self._series:
            self._series[name] = []
            self._colours[name] = QColor(colour or PALETTE[(len(self._colours)) % len(PALETTE)])

    def add_point(self, series: str, x: float, y: float) -> None:
        """Append ``(x, y)`` to ``series`` (created if new) and repaint; non-finite points are skipped."""
        self.add_series(series)
        x, y = float(x), float(y)
        if math.isfinite(x) and math.isfinite(y):
            self._series[series].append((x, y))
            self.update()

    def points(self, series: str) -> list[tuple[float, float]]:
        """The points of ``series`` drawn so far (empty for an unknown name)."""
        return list(self._series.get(series, []))

    def clear(self) -> None:
        """Remove every point (the series and their colours stay)."""
        for points in self._series.values():
            points.clear()
        self.update()

    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(x_min, x_max, y_min, y_max)`` over all points, widened where flat; None without points."""
        everything = [p for points in self._series.values() for p in points]
        if not everything:
            return None
        xs, ys = [p[0] for p in everything], [p[1] for p in everything]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if x1 == x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 == y0:
            pad = abs(y0) * 0.1 or 0.5
            y0, y1 = y0 - pad, y1 + pad
        return x0, x1, y0, y1

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(420, 220)

    # -- painting -------------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("white"))
        metrics = QFontMetrics(self.font())
        line = metrics.height()
        bounds = self.bounds()
        y_labels = (_label(bounds[3]), _label(bounds[2])) if bounds else ("", "")
        # 1. Layout: title on top, legend at the bottom, y labels on the left, x labels under the axes.
        left = 6 + max(metrics.horizontalAdvance(t) for t in y_labels)
        top = 4 + (line if self.title else 0) + 4
        bottom = self.height() - 4 - line - 4 - line  # legend row, then x labels
        area = QRectF(left + 4, top, max(self.width() - left - 12, 10), max(bottom - top, 10))
        painter.setPen(QColor("#222222"))
        if self.title:
            painter.drawText(QRectF(0, 4, self.width(), line), Qt.AlignmentFlag.AlignHCenter, self.title)
        # 2. Axes and their labels.
        painter.setPen(QPen(QColor("#888888"), 1))
        painter.drawRect(area)
        painter.setPen(QColor("#444444"))
        if bounds:
            x0, x1, y0, y1 = bounds
            painter.drawText(
                QRectF(0, area.top() - line / 2, left, line), Qt.AlignmentFlag.AlignRight, y_labels[0]
            )
            painter.drawText(
                QRectF(0, area.bottom() - line / 2, left, line), Qt.AlignmentFlag.AlignRight, y_labels[1]
            )
            under = QRectF(area.left(), area.bottom() + 2, area.width(), line)
            painter.drawText(under, Qt.AlignmentFlag.AlignLeft, _label(x0))
            painter.drawText(under, Qt.AlignmentFlag.AlignRight, _label(x1))
        if self.x_label:
            painter.drawText(
                QRectF(area.left(), area.bottom() + 2, area.width(), line),
                Qt.AlignmentFlag.AlignHCenter,
                self.x_label,
            )
        # 3. The curves (a dot where a series has a single point).
        if bounds:
            x0, x1, y0, y1 = bounds

            def at(x: float, y: float) -> QPointF:
                return QPointF(
                    area.left() + (x - x0) / (x1 - x0) * area.width(),
                    area.bottom() - (y - y0) / (y1 - y0) * area.height(),
                )

            painter.setClipRect(area.adjusted(-3, -3, 3, 3))
            for name, points in self._series.items():
                if not points:
                    continue
                colour = self._colours[name]
                painter.setPen(QPen(colour, 2))
                if len(points) == 1:
                    painter.setBrush(colour)
                    painter.drawEllipse(at(*points[0]), 3, 3)
                    painter.setBrush(Qt.BrushStyle.NoBrush)
                    continue
                path = QPainterPath(at(*points[0]))
                for x, y in points[1:]:
                    path.lineTo(at(x, y))
                painter.drawPath(path)
            painter.setClipping(False)
        # 4. The legend: a colour swatch and the name of each series.
        x = area.left()
        y = self.height() - 4 - line
        for name in self._series:
            painter.fillRect(QRectF(x, y + line / 2 - 2, 14, 4), self._colours[name])
            x += 18
            painter.setPen(QColor("#222222"))
            painter.drawText(QRectF(x, y, metrics.horizontalAdvance(name) + 2, line), 0, name)
            x += metrics.horizontalAdvance(name) + 14
        painter.end()
