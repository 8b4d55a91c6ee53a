"""Feedback without avoidable warnings: alternative text for the figures a notebook draws.

nbconvert's HTML exporter warns "Alternative text is missing on N image(s)" for every feedback page
with a plot, and gives the image a placeholder. ``FigureAltText`` (in ``GenerateFeedback``'s
preprocessors, see ``configure_nbgrader``) gives each PNG/JPEG output without one an ``alt``: the
figure's own text representation (matplotlib's ``<Figure size 640x480 with 2 Axes>``) and the
cell it came from, which the classic template nbgrader's feedback extends puts in the ``<img>``.
"""

from __future__ import annotations

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List

IMAGE_TYPES = ("image/png", "image/jpeg")


class FigureAltText(NbGraderPreprocessor):
    """Every image output without alternative text gets one (``output.metadata[mime]["alt"]``)."""

    # nbconvert's exporters configure this for every NbConvertBase; declared so it is no unknown option.
    display_data_priority = List(['text/html', 'application/pdf', 'text/latex', 'image/svg+xml', 'image/png',
                                  'image/jpeg', 'text/plain']).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        for output in cell.get("outputs", []):
            for mime in IMAGE_TYPES:
                if mime not in output.get("data", {}):
                    continue
                meta = output.setdefault("metadata", {}).setdefault(mime, {})
                if not meta.get("alt"):
                    described = str(output["data"].get("text/plain", "a figure")).strip("<> \n") or "a figure"
                    meta["alt"] = f"{described}, drawn by code cell {cell.get('execution_count') or index + 1}"
        return cell, resources
