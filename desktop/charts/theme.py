"""Chart colours: one palette for the dark theme and one for the light."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChartTheme:
    background: str
    foreground: str  # axis text and titles
    axis: str  # axis lines and ticks
    grid_alpha: float
    crosshair: str
    label_fill: str  # crosshair label background, with alpha so the lines stay visible beneath
    series: tuple[str, ...]
    band_alpha: int  # 0-255 opacity of the min-max band
    separator: str  # the gaps between the charts of a panel


# Okabe-Ito-like hues (distinguishable with the common colour-vision deficiencies), brightened for the
# dark background and deepened for the light one so both keep contrast.
DARK = ChartTheme(
    background="#1b1d23",
    foreground="#d5d8de",
    axis="#8a909c",
    grid_alpha=0.18,
    crosshair="#c8ccd4",
    label_fill="#23262ee6",
    series=("#56b4e9", "#f0a14a", "#5fd3a3", "#e47c9b", "#c9b458"),
    band_alpha=60,
    separator="#30333b",
)
LIGHT = ChartTheme(
    background="#ffffff",
    foreground="#22252b",
    axis="#5c6370",
    grid_alpha=0.22,
    crosshair="#4a4f59",
    label_fill="#ffffffe6",
    series=("#0072b2", "#d55e00", "#009e73", "#cc3d77", "#8a7a00"),
    band_alpha=50,
    separator="#d5d8de",
)


def chart_theme(dark: bool) -> ChartTheme:
    return DARK if dark else LIGHT
