"""The experiment view: model, training and launcher form, validated as the user types."""

from __future__ import annotations

import threading

import panel as pn
import param
from panel.viewable import Viewer

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
        self._name = w.TextInput.from_param(s.run_name, label="Run name")
        self._backbone = w.Select.from_param(s.backbone, label="Backbone", css_classes=["fs-backbone"])
        self._upsampling = w.Select.from_param(s.upsampling, label="Upsampling", css_classes=["fs-upsampling"])
        self._loss = w.Select.from_param(s.loss, label="Loss", css_classes=["fs-loss"])
        self._scale = w.IntInput.from_param(s.scale, label="Scale factor")
        self._patch = w.IntInput.from_param(s.patch_size, label="Patch size (high-res)")
        self._epochs = w.IntInput.from_param(s.epochs, label="Epochs", css_classes=["fs-epochs"])
        self._samples = w.IntInput.from_param(s.samples_per_epoch, label="Samples per epoch", css_classes=["fs-samples"])
        self._batch = w.IntInput.from_param(s.batch_size, label="Batch size")
        # A slider would show 1e-3 as "0"; a float input with a format keeps it readable.
        self._lr = w.FloatInput.from_param(s.lr, label="Learning rate", format="0.[00000]", step=1e-4)
        self._train_period = w.DateRangePicker.from_param(s.train_period, label="Training period")
        self._val_period = w.DateRangePicker.from_param(s.val_period, label="Validation period")
        self._test_period = w.DateRangePicker.from_param(s.test_period, label="Test period")
        self._launcher = w.Select.from_param(s.launcher, label="Launcher", css_classes=["fs-launcher"])
        self._slurm = pn.Column(
            w.TextInput.from_param(s.partition, label="Partition", css_classes=["fs-partition"]),
            w.TextInput.from_param(s.account, label="Account"),
            w.TextInput.from_param(s.slurm_time, label="Time limit", css_classes=["fs-time"]),
            w.IntInput.from_param(s.nodes, label="Nodes"),
            w.IntInput.from_param(s.gpus_per_node, label="GPUs per node"),
            w.IntInput.from_param(s.cpus_per_task, label="CPUs per task"),
            w.FloatInput.from_param(s.mem_gb, label="Memory (GB, 0 = default)"),
            visible=self.state.launcher == "slurm",
            sizing_mode="stretch_width",
        )
        self._error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["fs-config-error"])
        self._message = pn.pane.Markdown("", css_classes=["fs-message"])
        self._train = w.Button(label="Train", color="primary", disabled=True, css_classes=["fs-train"])
        self._train.on_click(self._on_train)
        self.state.param.watch(self._sync, ["config_error", "launcher", "choices_loaded", "message"])
        self._sync()

    def _sync(self, *events) -> None:
        s = self.state
        self._slurm.visible = s.launcher == "slurm"
        self._error.object = s.config_error
        self._error.visible = bool(s.config_error)
        self._train.disabled = bool(s.config_error) or not s.choices_loaded
        self._message.object = s.message

    def _on_train(self, event) -> None:
        if self.state.launcher == "inline":
            # The inline launcher trains in this process: keep the server's event loop free.
            threading.Thread(target=self.state.train, name="finescale-inline-train", daemon=True).start()
        else:
            self.state.train()  # local/SLURM submission only starts a job and returns

    def __panel__(self):
        return pn.Column(
            "### Experiment",
            self._name,
            self._backbone,
            self._upsampling,
            self._loss,
            pn.Row(self._scale, self._patch),
            pn.Row(self._epochs, self._samples),
            pn.Row(self._batch, self._lr),
            pn.Card(self._train_period, self._val_period, self._test_period, title="Periods", collapsed=True,
                    sizing_mode="stretch_width"),
            self._launcher,
            self._slurm,
            self._error,
            self._train,
            self._message,
            sizing_mode="stretch_width",
        )
