"""The `ann` reference: the trained ANN itself, whose accuracy is the ceiling in every table."""

from __future__ import annotations

from bench.api import RunContext, register_method
from bench.spiking import AnalogModel, SpikingModel
from bench.training import trained_ann


@register_method("ann", family="reference", paper="the non-spiking network every method starts from")
def build_ann_reference(context: RunContext) -> SpikingModel:
    """The trained ANN, the same output at every time step."""
    network, report = trained_ann(context)
    context.notes.update(
        epochs=report.epochs, train_wall_s=report.wall_s, time_steps_train=0, train_history=report.history
    )
    return AnalogModel(network)
