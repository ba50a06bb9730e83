"""`hybrid`: the converted SNN of the shared ANN, fine-tuned with surrogate-gradient BPTT.

Rathi et al., ICLR 2020, "Enabling Deep Spiking Neural Networks with Hybrid Conversion and Spike
Timing Dependent Backpropagation", in its simple modern form: start from the `conversion` of the
`ann` row's network (BN folded, thresholds from the calibration percentile, weight-normalized so
that every threshold is 1), then train that spiking network end to end by backpropagation through
`time_steps_train` steps with a surrogate gradient, for a few epochs, thresholds frozen or
learned. The readout is the time average, as for every method. Its training cost is the ANN's
plus the fine-tuning's (`epochs` and `train_wall_s` add both).

The fine-tuning uses the reference implementation's optimizer, Adam at a learning rate of 1e-4
(github.com/nitin-rathi/hybrid-snn-conversion, snn.py; AdamW here, whose decoupled weight decay
at that rate is negligible), not the run's SGD: a converted network starts with large losses at
low T, and SGD at 0.01 silenced the last spiking layer of the CIFAR-10 reference's ResNet-20
within 10 steps (the readout then answers one class, 10.00 % at every T), where AdamW at 1e-4
reached 56 % training accuracy in 60 steps at T = 4.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.api import RunContext, register_method
from bench.config import hash_of
from bench.conversion import convert
from bench.errors import UserError
from bench.spiking import IFNeuron, SpikingNetwork, Surrogate, build_encoder, replace_modules
from bench.training import fit, trained_ann
from methods.direct import DIVERGENCE_HINT, time_averaged_logits


@dataclass
class HybridOptions:
    """time_steps_train: T of the fine-tuning's BPTT. epochs, lr, optimizer: of the fine-tuning
    (the ANN trains with the run's `train:` section; `optimizer: null` takes the run's).
    train_thresholds: learn each neuron's threshold too. percentile, calibration_batches,
    initial_potential: of the conversion it starts from (`conversion`'s options). surrogate,
    surrogate_width: the surrogate gradient around the threshold of 1."""

    time_steps_train: int = 4
    epochs: int = 3
    lr: float = 1e-4
    optimizer: Literal["sgd", "adamw"] | None = "adamw"
    train_thresholds: bool = False
    percentile: float = 99.9
    calibration_batches: int = 8
    initial_potential: float = 0.5
    encoder: Literal["direct", "poisson"] = "direct"
    surrogate: str = "triangular"
    surrogate_width: float = 1.0

    def __post_init__(self) -> None:
        where = "methods[hybrid].options"
        if self.time_steps_train < 1 or self.epochs < 0 or not self.lr > 0:
            raise UserError(f"{where}: time_steps_train must be at least 1, epochs 0 or more and lr positive")
        if not 0 < self.percentile <= 100:
            raise UserError(f"{where}.percentile must be in (0, 100], got {self.percentile}")
        Surrogate(self.surrogate, self.surrogate_width)  # an unknown shape fails at config time


@register_method("hybrid", family="hybrid", paper="Rathi et al. 2020, ICLR, arXiv:2005.01807", options=HybridOptions)
def build_hybrid(context: RunContext) -> SpikingNetwork:
    """The converted SNN of the shared ANN, fine-tuned by surrogate-gradient BPTT."""
    options: HybridOptions = context.options
    network, ann_report = trained_ann(context)
    started = time.perf_counter()
    images = (batch for batch, _ in context.loader("calibration", shuffle=True))
    body, _ = convert(
        network,
        images,
        normalization="weight",
        percentile=options.percentile,
        max_batches=options.calibration_batches,
        reset="subtract",
        initial_potential=options.initial_potential,
        device=context.device,
    )
    surrogate = Surrogate(options.surrogate, options.surrogate_width)
    replace_modules(
        body,
        IFNeuron,
        lambda name, neuron: IFNeuron(
            neuron.threshold,
            reset_mode=neuron.reset_mode,
            initial_potential=neuron.initial_potential,
            surrogate=surrogate,
            learn_threshold=options.train_thresholds,
        ),
    )
    model = SpikingNetwork(body, build_encoder(options.encoder, context.seed), compile_neurons=context.compile_neurons)
    model = model.to(context.device)
    conversion_s = time.perf_counter() - started
    overrides = {
        "epochs": options.epochs,
        "lr": options.lr,
        **({"optimizer": options.optimizer} if options.optimizer else {}),
    }
    train = dataclasses.replace(context.train, **overrides)
    key = hash_of([context.fingerprint, context.train, dataclasses.asdict(options)])
    report = fit(
        model,
        time_averaged_logits(model, options.time_steps_train),
        context.loader("train", shuffle=True),
        train,
        context.device,
        checkpoint_path=Path(context.cache_dir) / f"hybrid-{context.architecture}-{key}.pt",
        reporter=context.progress,
        description=f"fine-tune hybrid {context.architecture} T={options.time_steps_train}",
        divergence_hint=DIVERGENCE_HINT,
    )
    model.reset_state()
    context.notes.update(
        epochs=ann_report.epochs + report.epochs,
        time_steps_train=options.time_steps_train,
        train_wall_s=ann_report.wall_s + conversion_s + report.wall_s,
        ann_epochs=ann_report.epochs,
        finetune_epochs=report.epochs,
        finetune_wall_s=report.wall_s,
        train_history=report.history,
    )
    return model
