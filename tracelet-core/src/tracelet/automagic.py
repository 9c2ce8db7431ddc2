"""Automagic: describe hyperparameters, models and datasets without the user spelling them out.

:class:`AutomagicConfig` says what is looked at. Every function here is pure (it only
reads the object it is given) and returns plain parameters, ready for ``log_params``.
Nothing is imported: a model is recognised by what it offers (``parameters()``,
``get_params()``), not by its library.
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from tracelet.exceptions import ConfigurationError
from tracelet.redaction import is_secret_key
from tracelet.setting_kinds import Bool, Names, Number, setting
from tracelet.values import ParamValue

VALUE_KINDS = frozenset({"bool", "int", "float", "str", "list"})
"""Kinds of values automagic keeps as hyperparameters (``list``: lists and tuples of the
others, logged as their text)."""


def _value_kinds(value: Any) -> frozenset[str]:
    kinds = frozenset(Names(unique=True).check("value_kinds", value) or ())
    unknown = kinds - VALUE_KINDS
    if unknown:
        raise ConfigurationError(
            f"AutomagicConfig value_kinds has unknown kind(s) {sorted(unknown)}; "
            f"choose from {sorted(VALUE_KINDS)}"
        )
    return kinds


def _frameworks(value: Any) -> frozenset[str] | None:
    names = Names(unique=True, optional=True).check("frameworks", value)
    if names is not None and not names:
        raise ConfigurationError(
            "AutomagicConfig frameworks is empty; give the integrations to attach "
            "(None: the automagic_frameworks setting); to attach none, list their plugins "
            "in disable_plugins"
        )
    return None if names is None else frozenset(names)


@attrs.frozen(kw_only=True)
class AutomagicConfig:
    """What automagic capture looks at: ``Experiment(automagic=True, automagic_config=...)``.

    Hyperparameters are the caller's local variables captured at start (and by
    ``capture_hyperparams``), and the ``get_params()`` of models given to ``capture_model``.
    Private names and names that say they hold a secret (``api_key``) are never kept.
    """

    frameworks: frozenset[str] | None = attrs.field(default=None, converter=_frameworks)
    """Framework integrations to attach (None: the ``automagic_frameworks`` setting)."""
    hyperparameters: bool = setting(True, Bool(), "Capture the caller's variables at start.")
    value_kinds: frozenset[str] = attrs.field(default=VALUE_KINDS, converter=_value_kinds)
    """Kinds of values kept (:data:`VALUE_KINDS`)."""
    include: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(_patterns(v)))
    """Shell-style patterns (``lr*``); when given, a name must match one to be kept."""
    exclude: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(_patterns(v)))
    """Shell-style patterns of names never kept."""
    max_string_length: int = setting(250, Number(int, 0), "Longest string kept.")
    max_list_length: int = setting(16, Number(int, 0), "Most items of a list kept.")

    def keeps(self, name: str) -> bool:
        """Whether a variable called ``name`` may be captured."""
        if name.startswith("_") or is_secret_key(name):
            return False
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def value(self, value: Any) -> ParamValue | None:
        """``value`` as a parameter, or None when it is not of a kind kept."""
        if self._simple(value):
            return value
        if (
            "list" in self.value_kinds
            and isinstance(value, list | tuple)
            and len(value) <= self.max_list_length
            and all(map(self._simple, value))
        ):
            return str(list(value))
        return None

    def _simple(self, value: Any) -> bool:
        if isinstance(value, bool):
            return "bool" in self.value_kinds
        if isinstance(value, str):
            return "str" in self.value_kinds and len(value) <= self.max_string_length
        if isinstance(value, int):
            return "int" in self.value_kinds
        return isinstance(value, float) and "float" in self.value_kinds


def _patterns(value: Any) -> list[str]:
    return list(Names().check("pattern", value) or ())


DEFAULT = AutomagicConfig()


def users_namespace() -> Mapping[str, Any]:
    """The local variables of the innermost calling frame outside the tracelet package."""
    frame = sys._getframe(1)
    while frame.f_back is not None and _in_tracelet(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
    return frame.f_locals


def _in_tracelet(module: str) -> bool:
    return module == "tracelet" or module.startswith("tracelet.")


def hyperparameters_in(
    namespace: Mapping[str, Any], config: AutomagicConfig = DEFAULT
) -> dict[str, ParamValue]:
    """The names in ``namespace`` that look like hyperparameters under ``config``.

    By default kept: public names bound to a bool, int, float, short str, or a short
    list/tuple of those. Skipped: private names, names that say they hold a secret
    (``api_key``, ``token`` ...), modules, classes, functions, and everything else.
    """
    found: dict[str, ParamValue] = {}
    for name, value in namespace.items():
        if inspect.ismodule(value) or callable(value) or not config.keeps(name):
            continue
        kept = config.value(value)
        if kept is not None:
            found[name] = kept
    return found


def describe_model(model: Any, config: AutomagicConfig = DEFAULT) -> dict[str, ParamValue]:
    """Class; parameter counts, size in bytes and layers (PyTorch-style ``parameters()``
    and ``modules()``); or estimator parameters (scikit-learn-style ``get_params()``)."""
    found: dict[str, ParamValue] = {
        "class": type(model).__qualname__,
        "module": type(model).__module__,
    }
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        found.update(_parameter_counts(model, list(parameters())))
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        params = get_params()
        if isinstance(params, Mapping):
            kept = hyperparameters_in(params, config)
            found.update({f"params/{k}": v for k, v in kept.items()})
    return found


def _parameter_counts(model: Any, parameters: list[Any]) -> dict[str, ParamValue]:
    """Counts and bytes of a PyTorch-style model's parameters (and buffers), and its
    layers: how many leaf modules, and of which kinds (``Linear x2, ReLU x1``). A lazy
    module's parameters and buffers are left out until they are sized."""
    parameters = [p for p in parameters if _sized(p)]
    found: dict[str, ParamValue] = {
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(
            p.numel() for p in parameters if getattr(p, "requires_grad", True)
        ),
    }
    buffers = getattr(model, "buffers", None)
    tensors = parameters + [b for b in (buffers() if callable(buffers) else ()) if _sized(b)]
    if all(hasattr(t, "element_size") for t in tensors):
        found["size_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    modules = getattr(model, "modules", None)
    if callable(modules):
        leaves = [type(m).__name__ for m in modules() if not any(True for _ in m.children())]
        kinds = {kind: leaves.count(kind) for kind in dict.fromkeys(leaves)}
        found["layers"] = len(leaves)
        found["layer_types"] = ", ".join(f"{kind} x{count}" for kind, count in kinds.items())
    return found


def _sized(tensor: Any) -> bool:
    """Whether a tensor has its size (not a lazy module's ``Uninitialized...`` one)."""
    return not type(tensor).__name__.startswith("Uninitialized")


def describe_dataset(dataset: Any) -> dict[str, ParamValue]:
    """Class, size (``len``), and ``shape``/``dtype`` when the dataset has them."""
    found: dict[str, ParamValue] = {
        "class": type(dataset).__qualname__,
        "module": type(dataset).__module__,
    }
    with contextlib.suppress(TypeError):
        found["size"] = len(dataset)
    shape = getattr(dataset, "shape", None)
    if shape is not None:
        found["shape"] = str(tuple(shape))
    dtype = getattr(dataset, "dtype", None)
    if dtype is not None:
        found["dtype"] = str(dtype)
    return found
