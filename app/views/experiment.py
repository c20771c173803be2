"""The experiment view: every choice of the engine's configuration, validated as the user types.

The first fields (dataset, backbone, upsampling, loss, sizes, periods, launcher and SLURM
resources) are :class:`~app.state.AppState` parameters; every other field of
:class:`engine.config.ExperimentConfig` comes from :class:`app.schema.ExperimentOptions`,
generated from the configuration's dataclasses, one card per section.
"""

from __future__ import annotations

import io

import panel as pn
import param
from panel.viewable import Viewer

from ..serial import one_at_a_time
from ..state import AppState


class ExperimentView(Viewer):
    """The experiment form, the inline validation message and the Train button.

    Every field writes straight into :class:`AppState`; the state re-validates the whole
    :class:`engine.config.ExperimentConfig` on each change and the view shows
    ``state.config_error`` under the form. The SLURM fields appear only for the ``slurm``
    launcher.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.state.param
        w = pn.widgets
        self._field_panes: dict[str, pn.pane.Str] = {}  # dotted field -> its error line
        f = self._field
        self._name = f("name", w.TextInput.from_param(s.run_name, label="Run name", css_classes=["fs-exp-name"]))
        self._backbone = f("model.backbone", w.Select.from_param(s.backbone, label="Backbone", css_classes=["fs-backbone"]))
        self._upsampling = f("model.upsampling", w.Select.from_param(s.upsampling, label="Upsampling",
                                                                     css_classes=["fs-upsampling"]))
        self._loss = f("training.loss", w.Select.from_param(s.loss, label="Loss", css_classes=["fs-loss"]))
        self._scale = f("data.scale", w.IntInput.from_param(s.scale, label="Scale factor", css_classes=["fs-scale"]))
        self._patch = f("data.patch_size", w.IntInput.from_param(s.patch_size, label="Patch size (high-res)",
                                                                 css_classes=["fs-patch"]))
        self._epochs = f("training.epochs", w.IntInput.from_param(s.epochs, label="Epochs", css_classes=["fs-epochs"]))
        self._samples = f("training.samples_per_epoch", w.IntInput.from_param(
            s.samples_per_epoch, label="Samples per epoch", css_classes=["fs-samples"]))
        self._batch = f("training.batch_size", w.IntInput.from_param(s.batch_size, label="Batch size",
                                                                     css_classes=["fs-batch"]))
        # A slider would show 1e-3 as "0"; a float input with a format keeps it readable.
        self._lr = f("training.lr", w.FloatInput.from_param(s.lr, label="Learning rate", format="0.[00000]", step=1e-4,
                                                            css_classes=["fs-lr"]))
        self._train_period = f("data.train_period", w.DateRangePicker.from_param(s.train_period, label="Training period"))
        self._val_period = f("data.val_period", w.DateRangePicker.from_param(s.val_period, label="Validation period"))
        self._test_period = f("data.test_period", w.DateRangePicker.from_param(s.test_period, label="Test period"))
        self._launcher = f("launch.launcher", w.Select.from_param(s.launcher, label="Launcher", css_classes=["fs-launcher"]))
        self._slurm = pn.Column(
            f("launch.partition", w.TextInput.from_param(s.partition, label="Partition", css_classes=["fs-partition"])),
            f("launch.account", w.TextInput.from_param(s.account, label="Account")),
            f("launch.time", w.TextInput.from_param(s.slurm_time, label="Time limit", css_classes=["fs-time"])),
            f("launch.nodes", w.IntInput.from_param(s.nodes, label="Nodes", css_classes=["fs-nodes"])),
            f("launch.gpus_per_node", w.IntInput.from_param(s.gpus_per_node, label="GPUs per node")),
            f("launch.cpus_per_task", w.IntInput.from_param(s.cpus_per_task, label="CPUs per task")),
            f("launch.mem_gb", w.FloatInput.from_param(s.mem_gb, label="Memory (GB, 0 = default)")),
            visible=self.state.launcher == "slurm",
            sizing_mode="stretch_width",
        )
        self._error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["fs-config-error"])
        self._checking = pn.Row(pn.indicators.LoadingSpinner(value=True, size=20, sizing_mode="fixed"),
                                pn.pane.Markdown("Checking the data…"), visible=False, css_classes=["fs-checking"])
        self._message = pn.pane.Markdown("", css_classes=["fs-message"])
        self._train = w.Button(label="Train", color="primary", disabled=True, css_classes=["fs-train"])
        self._train.on_click(self._on_train)
        self._use_region = f("data.bbox", w.Checkbox.from_param(s.use_region, label="Train on the picked region only (data.bbox)",
                                                                css_classes=["fs-use-region"]))
        self._sections = {section: self._section_card(section) for section in ("data", "model", "training",
                                                                                "inference", "launch")}
        # Save: the browser downloads the form as YAML; load: the browser uploads a file's
        # content (bytes), never a server path, and the engine parses it with yaml.safe_load.
        self._save = w.FileDownload(callback=self._yaml_file, filename="experiment.yaml", label="Save YAML",
                                    css_classes=["fs-save-yaml"], sizing_mode="stretch_width")
        self._upload = w.FileInput(accept=".yaml,.yml", multiple=False, css_classes=["fs-load-yaml"],
                                   sizing_mode="stretch_width")
        self._upload.param.watch(self._on_upload, "value")
        self.state.param.watch(self._sync, ["config_error", "field_errors", "checking_data", "launcher",
                                            "choices_loaded", "message"])
        self._sync()

    def _field(self, dotted: str, widget) -> pn.Column:
        """``widget`` with its error line under it (empty and hidden while the field is valid)."""
        css = "fs-error-" + dotted.replace(".", "-").replace("_", "-")
        pane = pn.pane.Str("", visible=False, css_classes=["fs-field-error", css],
                           styles={"color": "#b00020", "font-size": "12px", "white-space": "pre-wrap"},
                           sizing_mode="stretch_width", margin=(0, 10, 4, 10))
        self._field_panes[dotted] = pane
        return pn.Column(widget, pane, sizing_mode="stretch_width", margin=0)

    def field_error(self, dotted: str) -> str:
        """The message shown beside a field ('' when none)."""
        pane = self._field_panes.get(dotted)
        return pane.object if pane is not None and pane.visible else ""

    @one_at_a_time  # an older read of the state must not re-enable Train after a newer error
    def _sync(self, *events) -> None:
        s = self.state
        self._slurm.visible = s.launcher == "slurm"
        errors = s.field_errors
        for dotted, pane in self._field_panes.items():
            text = errors.get(dotted, "")
            if pane.object != text:
                pane.object = text
            pane.visible = bool(text)
        # The general alert lists what no shown field owns (and every message, for the record).
        shown = {k for k in errors if k in self._field_panes}
        others = [m for k, m in errors.items() if k not in shown]
        self._error.object = s.config_error
        self._error.visible = bool(s.config_error)
        self._error.alert_type = "danger" if others or not shown else "warning"
        self._checking.visible = s.checking_data
        self._train.disabled = bool(s.config_error) or s.checking_data or not s.choices_loaded
        self._message.object = s.message

    #: Labels of the generated option cards.
    SECTION_TITLES = {"data": "Data: downscaling type, predictors, static fields, sampling",
                      "model": "Model: head options, GAN and diffusion settings",
                      "training": "Training: learning mode, optimiser, precision, seed",
                      "inference": "Inference: ensemble members, tiles",
                      "launch": "Launch: more SLURM resources"}

    def _section_card(self, section: str) -> pn.Card:
        """A card with the generated widgets of one configuration section, each with its error line."""
        names = [n for n in self.state.options.param if n.startswith(f"{section}_")
                 and not isinstance(self.state.options.param[n], param.Dict)]  # mappings: YAML only
        rows = []
        for name in names:
            p = self.state.options.param[name]
            label = p.label or name
            css = [f"fs-opt-{name}"]
            if isinstance(p, param.ListSelector):
                widget = pn.widgets.MultiChoice.from_param(p, label=label, css_classes=css)
            elif isinstance(p, param.Boolean):
                widget = pn.widgets.Checkbox.from_param(p, label=label, css_classes=css)
            elif isinstance(p, param.Integer):
                widget = pn.widgets.IntInput.from_param(p, label=label, css_classes=css)
            elif isinstance(p, param.Number):
                widget = pn.widgets.FloatInput.from_param(p, label=label, css_classes=css)
            elif isinstance(p, param.Selector):
                widget = pn.widgets.Select.from_param(p, label=label, css_classes=css)
            else:
                widget = pn.widgets.TextInput.from_param(p, label=label, css_classes=css)
            rows.append(self._field(f"{section}.{name[len(section) + 1:]}", widget))
        form = pn.Column(*rows, sizing_mode="stretch_width", css_classes=[f"fs-options-{section}"])
        return pn.Card(form, title=self.SECTION_TITLES[section], collapsed=True, sizing_mode="stretch_width",
                       css_classes=[f"fs-card-{section}"])

    @param.depends("state.dataset", "state.variable")
    def _dataset_line(self):
        return pn.pane.Markdown(f"Dataset **{self.state.dataset or '…'}**, variable **{self.state.variable or '…'}** "
                                "(chosen in the Data tab)", css_classes=["fs-exp-dataset"])

    def _yaml_file(self):
        return io.StringIO(self.state.config_yaml())

    def _on_upload(self, event) -> None:
        if event.new:
            self.state.load_yaml(event.new)

    def _on_train(self, event) -> None:
        # Only process-based launchers are offered (local, SLURM): submitting starts a job and
        # returns; training never runs in the server.
        self.state.train()

    def __panel__(self):
        return pn.Column(
            "### Experiment",
            self._dataset_line,
            self._name,
            self._backbone,
            self._upsampling,
            self._loss,
            pn.Row(self._scale, self._patch),
            pn.Row(self._epochs, self._samples),
            pn.Row(self._batch, self._lr),
            pn.Card(self._train_period, self._val_period, self._test_period, title="Periods", collapsed=True,
                    sizing_mode="stretch_width"),
            self._use_region,
            *self._sections.values(),
            self._launcher,
            self._slurm,
            pn.Row(self._save, self._upload, sizing_mode="stretch_width"),
            self._error,
            self._checking,
            self._train,
            self._message,
            sizing_mode="stretch_width",
        )
