"""Registers the torch integrations with Tracelet (entry point ``tracelet``: ``torch``).

Nothing here imports torch: each integration waits for the user's own import of the
library it hooks, so a run whose script never imports torch pays nothing.
"""

from __future__ import annotations

from tracelet.plugins import FrameworkRegistration, hookimpl
from tracelet_torch import __version__


def _tensor_values() -> object:
    from tracelet_torch.tensors import TensorValues

    return TensorValues()


def _tensorboard() -> object:
    from tracelet_torch.tensorboard import TensorBoardCapture

    return TensorBoardCapture()


def _optimizers() -> object:
    from tracelet_torch.optim import OptimizerCapture

    return OptimizerCapture()


@hookimpl
def tracelet_register_frameworks() -> list[FrameworkRegistration]:
    """TensorBoard capture and optimizer capture (selectable through
    ``automagic_frameworks``), and tensors as metric values (always on)."""
    return [
        FrameworkRegistration(
            "tensorboard",
            _tensorboard,
            "SummaryWriter calls (torch.utils.tensorboard, tensorboardX) reach the run",
            version=__version__,
        ),
        FrameworkRegistration(
            "torch",
            _optimizers,
            "optimizer hyperparameters, and their changes over time, as params and metrics",
            version=__version__,
        ),
        FrameworkRegistration(
            "torch-tensors",
            _tensor_values,
            "0-d tensors as metric values, read without blocking on the device",
            selectable=False,
            version=__version__,
        ),
    ]
