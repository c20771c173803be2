"""What each browser page costs to load and draw: settings that keep it small.

Five people opening the dashboard together on a 2-core login node were measured (``/proc``
CPU times of the server and of Chromium, ``benchmarks/results/app.md``): the browser's work
per page outweighed the server's. Two of its causes are settings, not the app's content:

- **WebGL.** HoloViews asks Bokeh for WebGL output by default (``BokehRenderer.webgl``).
  The maps are a few images and coastline lines, which a 2-D canvas draws at once; with
  WebGL every plot holds a GL context (browsers keep only about 16 per page) and every paint
  copies the GL canvas into the 2-D one (``blit_webgl``), which in a browser without a GPU
  (headless, remote desktop, many login-node sessions) is software GL in Chromium's GPU
  process: about 0.5 s of the page's script time plus the GPU process's own.
- **MathJax.** Panel adds Bokeh's 1.8 MB MathJax bundle to a served page whenever the first
  document holds any Panel HTML or Markdown pane (``panel.io.resources._panel_use_mathjax``),
  whether or not its text has TeX in it. The dashboard shows no TeX (a ``$`` in a message,
  such as ``$FINESCALE_RUNS``, is meant literally), so the bundle is loaded only when an HTML
  model of the page really holds a TeX string with math enabled, as Bokeh decides for its own
  models (``bokeh.embed.bundle._use_mathjax``). Without the bundle, BokehJS's MathJax provider
  reports "failed" and text is shown as written.

:func:`configure` applies both, once per process; ``app.main`` calls it.
"""

from __future__ import annotations

import threading

_DONE = threading.Event()
_LOCK = threading.Lock()


def _page_needs_mathjax(roots) -> bool:
    """Whether a Panel HTML model in ``roots`` holds TeX with math enabled (Bokeh's own test
    for its Div, applied to Panel's HTML model)."""
    from bokeh.embed.bundle import _any
    from bokeh.embed.util import contains_tex_string
    from panel.models.markup import HTML

    return _any(roots, lambda obj: isinstance(obj, HTML) and not obj.disable_math
                and isinstance(obj.text, str) and contains_tex_string(obj.text))


def configure() -> None:
    """Canvas (not WebGL) output for HoloViews' Bokeh plots, and MathJax only for pages with
    TeX. Idempotent; safe from several sessions' threads."""
    if _DONE.is_set():
        return
    with _LOCK:
        if _DONE.is_set():
            return
        from holoviews.plotting.bokeh.renderer import BokehRenderer
        from panel.io import resources

        # A class default: every renderer instance (hv.renderer("bokeh"), Panel's HoloViews
        # pane) made from now on, and existing ones that did not set it themselves.
        BokehRenderer.webgl = False
        if hasattr(resources, "_panel_use_mathjax"):
            resources._panel_use_mathjax = _page_needs_mathjax
        _DONE.set()
