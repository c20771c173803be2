"""The data view: which catalogue dataset and which variable to downscale."""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..state import AppState


class DataView(Viewer):
    """Dataset and variable selectors with the catalogue's description of the dataset.

    Parameters
    ----------
    state : AppState
        The shared dashboard state; the selectors write ``state.dataset`` / ``state.variable``.
    """

    state = param.ClassSelector(class_=AppState)

    def __init__(self, **params):
        super().__init__(**params)
        self._dataset = pn.widgets.Select.from_param(self.state.param.dataset, label="Dataset", css_classes=["fs-dataset"])
        self._variable = pn.widgets.Select.from_param(self.state.param.variable, label="Variable", css_classes=["fs-variable"])

    @param.depends("state.dataset_info", "state.time_range", "state.variable")
    def _description(self):
        info = self.state.dataset_info or {}
        if not info and self.state.dataset is None:
            return pn.pane.Markdown("*Reading the catalogue…*")
        lines = []
        if info.get("description"):
            lines.append(str(info["description"]).strip())
        facts = []
        if info.get("role"):
            facts.append(f"role **{info['role']}**")
        variables = info.get("variables")
        var = variables.get(self.state.variable) if isinstance(variables, dict) else None
        if isinstance(var, dict):
            if var.get("long_name"):
                facts.append(str(var["long_name"]))
            if var.get("units"):
                facts.append(f"units **{var['units']}**")
        if info.get("resolution"):
            facts.append(f"{info['resolution']:.3g}° grid" if isinstance(info["resolution"], (int, float))
                         else f"resolution {info['resolution']}")
        if info.get("remote"):
            facts.append("remote (needs network)")
        if self.state.time_range:
            start, end = self.state.time_range
            facts.append(f"{start} → {end}")
        if info.get("pairs_with"):
            pairs = info["pairs_with"]
            facts.append("pairs with " + ", ".join(pairs if isinstance(pairs, (list, tuple)) else [str(pairs)]))
        if facts:
            lines.append(" · ".join(facts))
        # Descriptions come from the project's own catalogue YAML; no math rendering of "$".
        return pn.pane.Markdown("\n\n".join(lines), disable_math=True)

    def __panel__(self):
        return pn.Column("### Data", self._dataset, self._variable, self._description, sizing_mode="stretch_width")
