"""Sweep specifications: what to train, validated before anything runs, expanded into runs.

A sweep spec is a TOML file (or the same structure built in Python) naming graph
generators with parameter grids or seeded distributions, how a graph becomes a
recurrent network (``model``), the Reber tasks, the training settings and the seeds.
:func:`expand` turns it into a list of frozen :class:`RunConfig` objects, each with a
stable ``run_id`` (hash of its canonical JSON, as OpenLTH keys runs by the hash of their
hyperparameters) and a ``draw_id`` shared by all runs whose graph comes from the same
generator call. A graph's identity is its content, ``graph_id`` (see
``graphprior.sweep.graph_id``), known once the graph is drawn.

Parameter values of a generator may be

* a scalar (``p = 0.1``) or a list (``n = [16, 32]``): a grid axis, or a uniform choice
  when ``sampling = "random"``;
* a seeded distribution (random sampling only): ``{uniform = [0.0, 1.0]}`` or
  ``{uniform_int = [10, 50]}`` (both ends inclusive);
* a derived value computed from other parameters without ``eval``:
  ``{div = ["n", 10]}`` is ``n // 10``; the operators are ``add``, ``sub``, ``mul``,
  ``div`` (floor division), ``min`` and ``max``, each taking two operands that are a
  number, a parameter name or another operator table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import inspect
import itertools
import json
import math
import operator
import os
import re
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from rnn_models.config import ConfigError, TrainConfig

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
Scalar = Union[bool, int, float, str]


class SpecError(ValueError):
    """A sweep spec is invalid; the message is one line naming the key path and what is allowed."""


class PathError(ValueError):
    """A validation error located below the object whose validator raised it (``path``):
    what validators raise so that ``format_error`` names the exact key."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------------------
# parameter values: fixed choices, distributions, derived expressions
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A fixed value or a list of values (a grid axis, or a uniform choice when sampling)."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Uniform:
    """A seeded uniform draw from ``[low, high]``; integer draws include both ends."""

    low: float
    high: float
    integer: bool


@dataclass(frozen=True)
class Derived:
    """``op(left, right)`` where operands are numbers, parameter names or nested expressions."""

    op: str
    left: "Operand"
    right: "Operand"

    def names(self) -> set[str]:
        """Parameter names this expression reads."""
        return {name for side in (self.left, self.right) for name in _operand_names(side)}

    def evaluate(self, values: dict[str, Any]) -> int | float:
        """Compute the value from already resolved parameters."""
        left, right = (_evaluate_operand(side, values) for side in (self.left, self.right))
        if self.op == "div" and right == 0:
            raise SpecError(f"derived value divides by zero ({_describe(self)} with {values})")
        return _OPERATORS[self.op](left, right)


Operand = Union[int, float, str, Derived]
ParamValue = Union[Choice, Uniform, Derived]

_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.floordiv,
    "min": min,
    "max": max,
}
_DISTRIBUTIONS = ("uniform", "uniform_int")


def _operand_names(operand: Operand) -> set[str]:
    if isinstance(operand, str):
        return {operand}
    if isinstance(operand, Derived):
        return operand.names()
    return set()


def _evaluate_operand(operand: Operand, values: dict[str, Any]) -> int | float:
    if isinstance(operand, Derived):
        return operand.evaluate(values)
    if isinstance(operand, str):
        value = values[operand]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"derived value reads parameter {operand!r}, which is not a number: {value!r}")
        return value
    return operand


def _describe(expression: Derived) -> str:
    return f"{{{expression.op} = [{expression.left!r}, {expression.right!r}]}}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    """A bool, int, finite float or string (NaN/inf cannot be hashed into a run id)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (bool, int, str))


def _parse_operand(raw: Any) -> Operand:
    if isinstance(raw, dict):
        return _parse_table(raw)
    if _is_number(raw) or isinstance(raw, str):
        return raw
    raise ValueError(f"an operand must be a number, a parameter name or an operator table, got {raw!r}")


def _parse_table(raw: dict) -> Uniform | Derived:
    allowed = _DISTRIBUTIONS + tuple(_OPERATORS)
    if len(raw) != 1 or next(iter(raw)) not in allowed:
        raise ValueError(f"a table must have exactly one key out of {', '.join(allowed)}, got {sorted(raw)}")
    (kind, args), = raw.items()
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise ValueError(f"{kind} takes a list of two values, got {args!r}")
    if kind in _DISTRIBUTIONS:
        return _parse_distribution(kind, args)
    left, right = (_parse_operand(a) for a in args)
    if kind == "div" and _is_number(right) and right == 0:
        raise ValueError("div by zero")
    return Derived(kind, left, right)


def _parse_distribution(kind: str, args: list | tuple) -> Uniform:
    integer = kind == "uniform_int"
    low, high = args
    numbers_ok = all(isinstance(v, int) if integer else _is_number(v) for v in (low, high))
    if not numbers_ok or isinstance(low, bool) or isinstance(high, bool):
        wanted = "integers" if integer else "finite numbers"
        raise ValueError(f"{kind} takes [low, high] as {wanted}, got {list(args)!r}")
    if low > high:
        raise ValueError(f"{kind} needs low <= high, got {list(args)!r}")
    return Uniform(low, high, integer)


def parse_param(raw: Any) -> ParamValue:
    """Parse one generator parameter value from its TOML/Python form (see the module docstring)."""
    if isinstance(raw, (Choice, Uniform, Derived)):
        return raw
    if isinstance(raw, dict):
        return _parse_table(raw)
    if isinstance(raw, (list, tuple)):
        if not raw or not all(_is_scalar(v) for v in raw):
            raise ValueError(f"a list of values must be non-empty and hold finite numbers, strings or booleans, got {raw!r}")
        return Choice(tuple(raw))
    if _is_scalar(raw):
        return Choice((raw,))
    raise ValueError(
        f"expected a finite number, string, boolean, list, {{uniform = [lo, hi]}}, {{uniform_int = [lo, hi]}} "
        f"or an operator table, got {raw!r}"
    )


def _param_to_json(value: ParamValue) -> Any:
    if isinstance(value, Choice):
        return value.values[0] if len(value.values) == 1 else list(value.values)
    if isinstance(value, Uniform):
        return {"uniform_int" if value.integer else "uniform": [value.low, value.high]}
    operands = [_param_to_json(o) if isinstance(o, Derived) else o for o in (value.left, value.right)]
    return {value.op: operands}


ParamField = Annotated[ParamValue, PlainValidator(parse_param)]


# ---------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """The base of every spec table: unknown keys, changes after validation and NaN/inf are
    refused (prune specs build on it too)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GeneratorSpec(StrictModel):
    """One graph generator of ``graphprior.generators`` and its parameters; ``repetitions``
    (grid sampling) overrides the sweep's graphs per grid point for this generator, e.g. 1
    for a deterministic one (a ring lattice), whose repetitions would all be one graph."""

    name: str
    params: dict[str, ParamField] = Field(default_factory=dict)
    repetitions: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_references(self) -> "GeneratorSpec":
        for key, value in self.params.items():
            if isinstance(value, Derived):
                unknown = value.names() - set(self.params)
                if unknown:
                    raise PathError(
                        ("params", key),
                        f"refers to unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(self.params)}",
                    )
        resolution_order(self.params)  # raises on a cycle
        return self


class ModelSpec(StrictModel):
    """How a graph becomes a recurrent network.

    ``recurrent``: the hidden size is the graph's node count and the graph masks the
    hidden-to-hidden weights (``graphprior.priors.recurrent_mask`` with ``orientation``
    and ``self_loops``); ``gate_layout = "tiled"`` repeats that mask over the gate blocks
    of LSTM/GRU, ``"per_gate"`` draws one independent graph per gate. ``layered``: the
    study's DAG-layered network (``graphprior.priors.layered_structure`` and
    ``rnn_models.layered.LayeredRNN``; Stier, Darji & Granitzer 2021), whose orientation
    is always the DAG by node order.

    ``input_encoding = "embedding"`` (layered only) feeds the network through a trainable
    N(0, 1) symbol embedding of the first layer's width, as the study did
    (``rnn_models.layered.EmbeddedInput``); the default feeds the one-hot symbols. Like
    every model option added later, it is left out of the canonical config at its default
    (``MODEL_OPTION_DEFAULTS``), so older run ids stay.

    Two bugs of the study's code, as options that reproduce them (docs/study.md):
    ``gate_layout = "row_repeated"`` repeats each mask row ``G`` times in place instead of
    tiling gate blocks (the layered network's connection masks, or the recurrent mapping's
    hidden-to-hidden mask); ``readout = "padded_position"`` (classify tasks) reads the state
    at the batch's last, padded step instead of each string's true end, pad steps fed the
    embedding of a pad symbol with ``input_encoding = "embedding"``
    (``rnn_models.layered.PaddedPositionClassifier``).
    """

    mapping: Literal["recurrent", "layered"] = "recurrent"
    orientation: Literal["symmetric", "random", "dag", "as_given"] = "symmetric"
    self_loops: bool = False
    gate_layout: Literal["tiled", "per_gate", "row_repeated"] = "tiled"
    cells: tuple[Literal["rnn_tanh", "rnn_relu", "lstm", "gru"], ...] = Field(default=CELLS, min_length=1)
    input_encoding: Literal["one_hot", "embedding"] = "one_hot"
    readout: Literal["last_step", "padded_position"] = "last_step"

    @model_validator(mode="before")
    @classmethod
    def _default_orientation(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mapping") == "layered" and "orientation" not in data:
            return {**data, "orientation": "dag"}
        return data

    @model_validator(mode="after")
    def _check_layered(self) -> "ModelSpec":
        if self.mapping == "layered" and self.orientation != "dag":
            raise PathError(("orientation",), "the layered mapping is the DAG by node order: use 'dag' or leave it out")
        if self.mapping != "layered" and self.input_encoding != "one_hot":
            raise PathError(("input_encoding",), "'embedding' is for mapping = \"layered\" only")
        return self

    @model_serializer(mode="wrap")
    def _drop_default_options(self, handler: Any) -> dict[str, Any]:
        return _without_default_options(handler(self))


MODEL_OPTION_DEFAULTS: dict[str, Any] = {"input_encoding": "one_hot", "readout": "last_step"}
"""Model options added after run ids were first pinned, with their defaults: a config
holding the default leaves the option out, so its run id is what it was before."""


def _without_default_options(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the model options that hold their defaults."""
    return {k: v for k, v in data.items() if not (k in MODEL_OPTION_DEFAULTS and v == MODEL_OPTION_DEFAULTS[k])}


STREAM_DEFAULTS: dict[str, int] = {"streams": 16, "window": 50, "stream_symbols": 100_000}
"""The ``continual`` task's stream settings when a spec leaves them out."""
STREAM_EVAL_WINDOW = 1000
"""Symbols the evaluation stream is read in per call (``graphprior.continual``)."""
_STREAM_FIELDS = tuple(STREAM_DEFAULTS)
_FILE_FIELDS = ("train_file", "test_file", "data_sha256")
_FILE_FORMATS = {"classify": "the study's CSV (,string,valid)", "next_symbol": "one string of the grammar per line"}


class TaskSpec(StrictModel):
    """A Reber task of ``reber.tasks``; ``size`` strings in all (continual tasks: windows
    in all), ``test_fraction`` of them held out.

    ``continual`` is the protocol of Gers, Schmidhuber & Cummins (2000): ``streams``
    parallel unbroken streams cut into ``window``-symbol windows, the state carried from
    window to window and never reset (``graphprior.continual``), and after training one
    fresh ``stream_symbols``-symbol stream run without any reset, whose measures join the
    run's metrics (``stream_solved``, ``stream_symbols_before_error``, ...); its grammar
    defaults to the embedded one, whose T/P symbols are the long-range memory task.
    ``continual_windows`` is the older, easier protocol: 100-symbol windows each started
    from a zero state. The stream fields belong to ``continual`` only and are left out of
    the canonical config (and so of the run id) elsewhere. ``reset = "strings"`` is the
    paper's comparison condition for ``continual``, "external reset": the state is zeroed
    at every string start, in training and in the evaluation stream; at its default
    ``"never"`` it is left out of the canonical config. ``reset_protocol`` (a column of
    the results) names the protocol that ran: ``"windows"``, ``"never"`` or ``"strings"``.

    ``train_file`` and ``test_file`` (``classify``: the study's CSV format
    ``,string,valid``; ``next_symbol``: one string of the grammar per line) replace the
    generated data; they are read and checked when the spec is validated (a bad row is one
    line naming the file and the row), and ``data_sha256``, the hash of both files'
    contents, is filled in, so a changed file is a different run (``size``,
    ``test_fraction`` and ``negatives`` do not apply then).

    ``lengths = "study"`` (generated classify data) draws strings with the length
    distributions of the study's dataset (``reber.tasks.classification_data``); the
    default ``"uniform"`` is left out of the canonical config.
    """

    kind: Literal["classify", "next_symbol", "continual", "continual_windows"] = "classify"
    negatives: Literal["paper", "hard"] = "paper"
    grammar: Literal["reber", "embedded"] = "reber"
    size: int = Field(default=2000, ge=8, le=10_000_000)
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0)
    streams: int | None = Field(default=None, ge=1, le=4096)
    window: int | None = Field(default=None, ge=2, le=100_000)
    stream_symbols: int | None = Field(default=None, ge=1000, le=100_000_000)
    reset: Literal["never", "strings"] = "never"
    train_file: str | None = None
    test_file: str | None = None
    data_sha256: str | None = None
    lengths: Literal["uniform", "study"] = "uniform"

    @model_validator(mode="before")
    @classmethod
    def _stream_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "continual":
            defaults = {**STREAM_DEFAULTS, "grammar": "embedded"}  # the paper's streams: long-range T/P
            return {**defaults, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _check_stream_fields(self) -> "TaskSpec":
        for name in _STREAM_FIELDS:
            if self.kind != "continual" and getattr(self, name) is not None:
                raise PathError((name,), "is only for kind = \"continual\"")
        if self.kind == "continual" and self.stream_symbols % STREAM_EVAL_WINDOW:
            raise PathError(("stream_symbols",), f"must be a multiple of {STREAM_EVAL_WINDOW}, got {self.stream_symbols}")
        if self.kind != "continual" and self.reset != "never":
            raise PathError(("reset",), f"{self.reset!r} is only for kind = \"continual\" (continual_windows always "
                            "starts each window from zero)")
        return self

    @property
    def reset_protocol(self) -> str | None:
        """When the carried state is zeroed: ``"windows"`` (``continual_windows``: every
        window from zero), ``"never"`` or ``"strings"`` (``continual``), None for other kinds."""
        return {"continual_windows": "windows", "continual": self.reset}.get(self.kind)

    @model_validator(mode="after")
    def _check_files(self) -> "TaskSpec":
        given = (self.train_file is not None, self.test_file is not None)
        if not any(given):
            if self.data_sha256 is not None:
                raise PathError(("data_sha256",), "is only for tasks with train_file and test_file")
            return self
        if not all(given):
            raise PathError(("test_file" if given[0] else "train_file",), "is required with the other data file")
        for name in ("train_file", "test_file"):
            object.__setattr__(self, name, expand_data_path(name, getattr(self, name)))
        if self.kind not in _FILE_FORMATS:
            raise PathError(("train_file",), f"data files are for kinds {sorted(_FILE_FORMATS)}, not {self.kind!r}")
        digest = data_file_digest(self)
        if self.data_sha256 is not None and self.data_sha256 != digest:
            raise PathError(("data_sha256",), f"the files changed: their hash is now {digest}")
        object.__setattr__(self, "data_sha256", digest)
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_optional_fields(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items()
                if not (k in _STREAM_FIELDS + _FILE_FIELDS and v is None or k == "reset" and v == "never"
                        or k == "lengths" and v == "uniform")}

    @model_validator(mode="after")
    def _check_lengths(self) -> "TaskSpec":
        if self.lengths != "uniform" and (self.kind != "classify" or self.train_file is not None):
            raise PathError(("lengths",), "'study' is for generated classify data (no train_file)")
        return self


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_data_path(name: str, path: str) -> str:
    """``path`` with its environment variables (``$NAME`` or ``${NAME}``) filled in, so a
    shipped spec can name data that lives elsewhere (the ``paper-study`` preset reads
    ``$GRAPHPRIOR_STUDY_DATA``), made absolute against the working directory; an unset
    variable is a PathError naming it. A path without variables is returned as it is."""
    variables = [match.group(1) or match.group(2) for match in _VARIABLE.finditer(path)]
    for variable in variables:
        if variable not in os.environ:
            raise PathError((name,), f"{path!r} needs the environment variable {variable}, which is not set "
                                     "(point it at the folder holding the data files)")
    return os.path.abspath(os.path.expandvars(path)) if variables else path


def data_file_digest(task: "TaskSpec") -> str:
    """Check both data files of ``task`` (every row, ``reber.tasks``'s readers) and return
    the SHA-256 of their contents; a bad file is a PathError naming it and the row."""
    from reber.tasks import read_csv, read_lines

    digest = hashlib.sha256()
    for name in ("train_file", "test_file"):
        path = Path(getattr(task, name))
        try:
            if task.kind == "classify":
                read_csv(path)
            else:
                read_lines(path, task.grammar)
            digest.update(path.read_bytes())
        except (OSError, ValueError) as error:
            detail = f"cannot read {path}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
            raise PathError((name,), f"{detail} ({_FILE_FORMATS[task.kind]} expected)") from None
    return digest.hexdigest()[:16]


SWEEP_TRAIN_DEFAULTS: dict[str, Any] = {"clip": 5.0}
"""Where a sweep's training default differs from ``TrainConfig``'s: the study clipped
gradients at a norm of 5."""


class _TrainChecks(StrictModel):
    """Runs ``rnn_models.config.TrainConfig``'s own checks on a spec's ``[train]`` table."""

    @model_validator(mode="after")
    def _check_with_train_config(self) -> "_TrainChecks":
        try:
            TrainConfig(**self.model_dump(), seed=0)
        except ConfigError as error:
            raise PathError((error.field,), f"must be {error.allowed}, got {error.value!r}") from None
        return self


def _train_spec() -> type[BaseModel]:
    """``TrainSpec``: the fields of ``TrainConfig`` (less ``seed``, which is the run's),
    their types and defaults (``SWEEP_TRAIN_DEFAULTS`` where a sweep's differ) and its
    checks, so the two are defined once."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: (hints[f.name], SWEEP_TRAIN_DEFAULTS.get(f.name, f.default))
              for f in dataclasses.fields(TrainConfig) if f.name != "seed"}
    spec = create_model("TrainSpec", __base__=_TrainChecks, **fields)
    spec.__doc__ = "Training settings: ``rnn_models.config.TrainConfig``'s fields and checks (its ``seed`` is the run's)."
    return spec


TrainSpec = _train_spec()


SPARSITY_METHODS = ("static", "set", "rigl", "dnw")
"""Sparsity during learning (``rnn_models.dynamic``): a fixed mask, SET, RigL, DNW."""
SPARSITY_PRIORS = ("confine", "start", "none")
"""How a sparsity run uses the run's prior graph: growth only inside it, start from it, ignore it."""
_FROZEN_METHODS = ("rigl", "dnw")


def _check_end(value: int | float) -> int | float:
    """``end``: a step (an int >= 1) or a fraction of training (a float in (0, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a step (int >= 1) or a fraction of training (float in (0, 1]), got {value!r}")
    if isinstance(value, int) and value < 1 or isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"must be a step (int >= 1) or a fraction of training (float in (0, 1]), got {value!r}")
    return value


def _check_freeze(value: int | float | None) -> int | float | None:
    """``freeze``: an epoch (an int >= 1) or a Jaccard threshold (a float in (0, 1])."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            isinstance(value, int) and value < 1 or isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"must be an epoch (int >= 1) or an epoch-to-epoch Jaccard threshold "
                         f"(float in (0, 1]), got {value!r}")
    return value


class _SparsityFields(StrictModel):
    """What a sparsity section and a sparsity run share (see :class:`SparsitySpec`)."""

    prior: Literal[SPARSITY_PRIORS] = "start"
    weights: Literal["ih", "hh", "both"] = "hh"
    allocation: Literal["uniform", "erk"] = "uniform"
    masks: Literal["shared", "per_gate"] = "shared"
    update_every: int = Field(default=100, ge=1)
    drop_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    end: Annotated[int | float, PlainValidator(_check_end)] = 0.75
    freeze: Annotated[int | float | None, PlainValidator(_check_freeze)] = None
    feature_epochs: tuple[Annotated[int, Field(ge=1)], ...] = ()


class SparsityRun(_SparsityFields):
    """The sparsity-during-learning settings of one run (part of its config and run id)."""

    method: Literal[SPARSITY_METHODS]
    density: float | None = None


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


class SparsitySpec(_SparsityFields):
    """One ``[sparsity]`` table (or one of several, ``[[sparsity]]``): every run of the
    sweep's graphs (those of ``generators``, names of the spec's generators; all when
    empty) trained with each of ``method`` x ``density`` (one value or a list each).

    ``method``: ``SPARSITY_METHODS`` (``static``: the start mask never changes). ``prior``:
    ``confine`` (start at ``density`` of the prior's connections, grow only inside it),
    ``start`` (start from the prior's mask at its own density, grow anywhere; no
    ``density``) or ``none`` (the prior graph is not used as a mask: a random start at
    ``density`` of all connections; ``static`` with ``density = 1.0`` is dense training).
    ``weights``: the managed matrices (``"hh"``: the recurrent ones, which the prior masks).
    ``allocation``: ``uniform`` or ``erk``; ``masks``: ``shared`` (one mask for a cell's
    gates) or ``per_gate``. SET and RigL update every ``update_every`` steps until ``end``
    (a step, or a fraction of all training steps), dropping ``drop_fraction`` with cosine
    decay. ``freeze`` (RigL and DNW only): fix the mask after that epoch (an int) or once an
    epoch's mask overlaps the previous one by that Jaccard index (a float). The structural
    features of the mask after each of ``feature_epochs`` (and the freeze epoch) join the
    run's history.
    """

    method: tuple[Literal[SPARSITY_METHODS], ...] = Field(min_length=1)
    density: tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...] | None = None
    generators: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _one_or_list(v) if k in ("method", "density", "generators") else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> "SparsitySpec":
        if self.prior == "start" and self.density is not None:
            raise PathError(("density",), 'is the prior\'s own with prior = "start": leave it out, '
                                          'or use prior = "confine" or "none"')
        if self.prior != "start" and self.density is None:
            raise PathError(("density",), f'is required with prior = "{self.prior}"')
        if self.freeze is not None:
            for method in self.method:
                if method not in _FROZEN_METHODS:
                    raise PathError(("freeze",), f"is for the early-frozen variant of {' and '.join(_FROZEN_METHODS)}, "
                                                 f"not {method!r}")
        return self

    def runs(self) -> list[SparsityRun]:
        """The per-run settings: every method x density."""
        shared = self.model_dump(exclude={"method", "density", "generators"})
        return [SparsityRun(**shared, method=method, density=density)
                for method in self.method for density in (self.density or (None,))]


def _check_sparsity(spec: "SweepSpec") -> None:
    """Checks of ``[sparsity]`` tables against the rest of the spec."""
    names = [g.name for g in spec.generators]
    for i, section in enumerate(spec.sparsity):
        for j, name in enumerate(section.generators):
            if name not in names:
                raise PathError(("sparsity", i, "generators", j),
                                f"unknown generator {name!r}; the spec's: {', '.join(dict.fromkeys(names))}")
        if section.prior != "none" and section.masks == "shared" and spec.model.gate_layout == "per_gate":
            raise PathError(("sparsity", i, "masks"), 'must be "per_gate" with gate_layout = "per_gate" '
                                                      '(each gate has its own prior)')
        if section.prior == "none" and spec.model.mapping == "layered":
            raise PathError(("sparsity", i, "prior"), 'the layered mapping is its prior\'s structure: use "confine" '
                                                      'or "start"')
        late = [e for e in section.feature_epochs if e > spec.train.epochs]
        if isinstance(section.freeze, int) and section.freeze > spec.train.epochs:
            late.append(section.freeze)
        if late:
            field = "feature_epochs" if late[0] in section.feature_epochs else "freeze"
            raise PathError(("sparsity", i, field), f"epoch {late[0]} is after the last epoch ({spec.train.epochs})")


class SweepSpec(StrictModel):
    """A whole sweep: graphs x cells x tasks x training seeds.

    ``sampling = "grid"`` takes the cartesian product of list-valued parameters and draws
    ``repetitions`` graphs per point; ``sampling = "random"`` draws ``n_samples`` parameter
    sets (and graphs) per generator from a generator seeded by ``seed``.
    """

    name: str = "sweep"
    seed: int = Field(default=0, ge=0, lt=2**63)
    sampling: Literal["grid", "random"] = "grid"
    n_samples: int | None = Field(default=None, ge=1)
    repetitions: int = Field(default=1, ge=1)
    seeds: tuple[Annotated[int, Field(ge=0, lt=2**63)], ...] = Field(default=(0,), min_length=1)
    generators: tuple[GeneratorSpec, ...] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    tasks: tuple[TaskSpec, ...] = Field(default=(TaskSpec(),), min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sparsity: tuple[SparsitySpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _sparsity_tables(cls, data: Any) -> Any:
        """One ``[sparsity]`` table is a list of one."""
        if isinstance(data, dict) and isinstance(data.get("sparsity"), dict):
            return {**data, "sparsity": [data["sparsity"]]}
        return data

    @model_validator(mode="after")
    def _check_sparsity_tables(self) -> "SweepSpec":
        _check_sparsity(self)
        return self

    @model_validator(mode="after")
    def _check_sampling(self) -> "SweepSpec":
        if self.sampling == "random" and self.n_samples is None:
            raise PathError(("n_samples",), 'is required when sampling = "random" (graphs per generator)')
        if self.sampling == "grid":
            if self.n_samples is not None:
                raise PathError(("n_samples",), 'is only allowed with sampling = "random"')
            for i, generator in enumerate(self.generators):
                for key, value in generator.params.items():
                    if isinstance(value, Uniform):
                        raise PathError(
                            ("generators", i, "params", key), 'a distribution needs sampling = "random"'
                        )
        else:
            for i, generator in enumerate(self.generators):
                if generator.repetitions is not None:
                    raise PathError(("generators", i, "repetitions"), 'is only allowed with sampling = "grid"')
        for i, generator in enumerate(self.generators):
            _check_generator(i, generator)
        for i, generator in enumerate(self.generators):
            _check_generator_values(i, generator, _points(self, i, generator))
        return self

    def to_toml_dict(self) -> dict[str, Any]:
        """The spec as plain data (parameter values in their TOML form)."""
        data = self.model_dump(mode="python", exclude={"generators"} | ({"sparsity"} if not self.sparsity else set()))
        data["generators"] = [
            {"name": g.name, "params": {k: _param_to_json(v) for k, v in g.params.items()}}
            | ({"repetitions": g.repetitions} if g.repetitions is not None else {})
            for g in self.generators
        ]
        return json.loads(json.dumps(data))


def _check_generator(index: int, generator: GeneratorSpec) -> None:
    """Check the name and parameter names against ``graphprior.generators.GENERATORS``."""
    from graphprior.generators import GENERATORS
    from graphprior.generators import parameters as generator_parameters

    if generator.name not in GENERATORS:
        raise PathError(
            ("generators", index, "name"),
            f"unknown generator {generator.name!r}; allowed: {', '.join(sorted(GENERATORS))}",
        )
    parameters = generator_parameters(generator.name)
    for key in generator.params:
        if key not in parameters:
            raise PathError(
                ("generators", index, "params", key),
                f"unknown parameter of {generator.name}; allowed: {', '.join(parameters)}",
            )
    for key, parameter in parameters.items():
        if parameter.default is inspect.Parameter.empty and key not in generator.params:
            raise PathError(
                ("generators", index, "params"), f"missing required parameter {key!r} of {generator.name}"
            )


def _check_generator_values(index: int, generator: GeneratorSpec, points: list[tuple[dict[str, Scalar], int]]) -> None:
    """Run the generator's own parameter checks on every parameter set the sweep will use
    (grid points, sampled and derived values), without drawing a graph."""
    from graphprior.generators import check_parameters

    checked: set[str] = set()
    for params, _ in points:
        key = json.dumps(params, sort_keys=True, default=str)
        if key in checked:
            continue
        checked.add(key)
        try:
            check_parameters(generator.name, **params)
        except ValueError as error:
            values = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise PathError(("generators", index, "params"),
                             f"{error} (in {generator.name} with {values})") from None


def resolution_order(params: dict[str, ParamValue]) -> list[str]:
    """Parameter names ordered so that derived values follow what they read (raises on cycles)."""
    order: list[str] = []
    pending = dict(params)
    while pending:
        ready = [k for k, v in pending.items() if not isinstance(v, Derived) or v.names() <= set(order)]
        if not ready:
            raise PathError(("params", next(iter(pending))), f"derived values form a cycle: {', '.join(pending)}")
        order.extend(ready)
        for key in ready:
            del pending[key]
    return order


# ---------------------------------------------------------------------------------------
# errors, loading
# ---------------------------------------------------------------------------------------


def _format_path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "spec"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The spec model class found at a location (to list the keys allowed there)."""
    model: Any = SweepSpec
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)), annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def format_error(error: dict[str, Any]) -> str:
    """One line for one pydantic error: the key path, what is wrong, what is allowed."""
    loc = tuple(error["loc"])
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, PathError):
        return f"{_format_path(loc + original.path)}: {original}"
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
        return f"{_format_path(loc[:-1])}: unknown key {loc[-1]!r}{allowed}"
    if error["type"] == "missing":
        return f"{_format_path(loc)}: required key is missing"
    if error["type"] == "value_error":
        return f"{_format_path(loc)}: {error['msg'].removeprefix('Value error, ')}"
    message = re.sub(r"^\w+ should", "must", error["msg"]).replace(" after validation", "")
    return f"{_format_path(loc)}: {message}, got {error['input']!r}"


def table_error(table: str, settings: type[BaseModel], error: ValidationError) -> SpecError:
    """One line for the first error of a spec's own table (``[prune]``, ``[search]``):
    the key path under ``table``, with ``settings``' keys named for an unknown one."""
    first, *rest = error.errors()
    more = f" (and {len(rest)} more)" if rest else ""
    if first["type"] == "extra_forbidden":
        return SpecError(f"{table}: unknown key {first['loc'][-1]!r}; allowed: {', '.join(settings.model_fields)}")
    return SpecError(format_error({**first, "loc": (table, *first["loc"])}) + more)


def validate_spec(data: dict[str, Any] | SweepSpec) -> SweepSpec:
    """Validate a spec given as plain data; raise :class:`SpecError` with one line on the first error."""
    if isinstance(data, SweepSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a table of keys, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        first, *rest = error.errors()
        # errors at a prefix of the first one's path only echo it (e.g. a list's length)
        rest = [e for e in rest if tuple(e["loc"]) != tuple(first["loc"])[: len(e["loc"])]]
        more = f" (and {len(rest)} more)" if rest else ""
        raise SpecError(format_error(first) + more) from None


def load_spec(path: str | Path, validate: Callable[[dict[str, Any]], Any] | None = None) -> SweepSpec:
    """Read and validate a TOML sweep spec (with ``validate``, e.g.
    ``graphprior.prune.validate_prune_spec``, another kind of spec built on it)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    _resolve_data_files(data, path.parent)
    try:
        return (validate or validate_spec)(data)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None


def _resolve_data_files(data: dict[str, Any], folder: Path) -> None:
    """Make the tasks' relative data-file paths relative to the spec file's folder (a path
    starting with an environment variable is left to ``expand_data_path``)."""
    tasks = data.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        for name in ("train_file", "test_file"):
            value = task.get(name) if isinstance(task, dict) else None
            if isinstance(value, str) and not value.startswith("$") and not Path(value).is_absolute():
                task[name] = str((folder / task[name]).resolve())


def preset_names(prune: bool = False) -> list[str]:
    """Names of the sweep presets shipped with the package; with ``prune``, of the prune
    presets (``prune-*``, for ``graphprior.prune``)."""
    folder = importlib.resources.files("graphprior") / "presets"
    names = sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    return [name for name in names if name.startswith("prune-") == prune]


def load_preset(name: str) -> SweepSpec:
    """Load a shipped preset spec by name (:func:`preset_names` lists them)."""
    names = preset_names()
    if name not in names:
        raise SpecError(f"preset: unknown preset {name!r}; allowed: {', '.join(names)}")
    text = (importlib.resources.files("graphprior") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return validate_spec(tomllib.loads(text))


# ---------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunConfig(StrictModel):
    """Everything that defines one training run; hashable and stable across processes."""

    generator: str
    params: dict[str, Scalar]
    graph_seed: int
    mapping: Literal["recurrent", "layered"]
    orientation: Literal["symmetric", "random", "dag", "as_given"]
    self_loops: bool
    gate_layout: Literal["tiled", "per_gate", "row_repeated"]
    cell: Literal["rnn_tanh", "rnn_relu", "lstm", "gru"]
    task: TaskSpec
    train: TrainSpec
    seed: int
    input_encoding: Literal["one_hot", "embedding"] = "one_hot"
    readout: Literal["last_step", "padded_position"] = "last_step"
    sparsity: SparsityRun | None = None

    @model_serializer(mode="wrap")
    def _drop_absent_sparsity(self, handler: Any) -> dict[str, Any]:
        """A run without sparsity keeps the config (and run id) it had before sparsity existed."""
        data = handler(self)
        if data.get("sparsity", 0) is None:
            del data["sparsity"]
        return data

    def canonical(self) -> dict[str, Any]:
        """The config as JSON-ready data (model options at their defaults left out)."""
        return _without_default_options(self.model_dump(mode="json"))

    @cached_property
    def run_id(self) -> str:
        """Hash of the canonical JSON: the run's key in the results store."""
        return _digest(self.canonical())

    @cached_property
    def draw_id(self) -> str:
        """Hash of the generator call (generator, params, graph seed): runs that draw their
        graph by the same call share it. It names a draw, not a graph: equal graphs drawn by
        different calls (a ring lattice for every seed) differ here and share ``graph_id``,
        the content fingerprint their records carry."""
        return _digest([self.generator, self.params, self.graph_seed])

    def group_key(self) -> tuple:
        """Runs with equal keys could be trained together by one batched group trainer
        (same cell, mapping, task, training settings and seed, so the same batch order;
        for the recurrent mapping also the node count, the hidden size); a trainer must
        still check the models it gets are compatible."""
        size = self.params.get("n") if self.mapping == "recurrent" else None
        return (self.cell, self.mapping, size, self.task, self.train, self.seed)

    def flat(self) -> dict[str, Any]:
        """Flat columns for the results table (graph parameters keep their own names)."""
        task = self.task
        columns: dict[str, Any] = {
            "generator": self.generator,
            **self.params,
            "graph_seed": self.graph_seed,
            "mapping": self.mapping,
            "orientation": self.orientation,
            "self_loops": self.self_loops,
            "gate_layout": self.gate_layout,
            "cell": self.cell,
            "task": task.kind,
            "negatives": task.negatives if task.kind == "classify" else None,
            "grammar": task.grammar,
            "task_size": task.size,
            "test_fraction": task.test_fraction,
            "data_seed": task.seed,
            "streams": task.streams,
            "window": task.window,
            "reset": task.reset_protocol,
            "data_sha256": task.data_sha256,
            "seed": self.seed,
        }
        columns.update({f"train_{k}": v for k, v in self.train.model_dump().items()})
        if self.sparsity is not None:
            columns.update({f"sparsity_{k}": v for k, v in self.sparsity.model_dump().items()
                            if k != "feature_epochs"})
        return columns


def _python_scalar(value: Any) -> Scalar:
    return value.item() if isinstance(value, np.generic) else value


def _resolve_derived(generator: GeneratorSpec, values: dict[str, Any]) -> dict[str, Scalar]:
    for key in resolution_order(generator.params):
        value = generator.params[key]
        if isinstance(value, Derived):
            values[key] = value.evaluate(values)
    return {key: _python_scalar(values[key]) for key in generator.params}


def _grid_points(generator: GeneratorSpec) -> list[dict[str, Scalar]]:
    axes = {k: v.values for k, v in generator.params.items() if isinstance(v, Choice)}
    points = []
    for combination in itertools.product(*axes.values()):
        points.append(_resolve_derived(generator, dict(zip(axes, combination))))
    return points


def draw_value(value: ParamValue, rng: np.random.Generator) -> Scalar:
    """One draw of a parameter's domain: a choice among its values or a uniform number."""
    if isinstance(value, Choice):
        return value.values[int(rng.integers(len(value.values)))]
    if value.integer:
        return int(rng.integers(int(value.low), int(value.high) + 1))
    return float(rng.uniform(value.low, value.high))


def _points(spec: SweepSpec, index: int, generator: GeneratorSpec) -> list[tuple[dict[str, Scalar], int]]:
    """(params, graph seed) of every graph that generator ``index`` of the sweep draws."""
    points = []
    if spec.sampling == "grid":
        for point in _grid_points(generator):
            for repetition in range(generator.repetitions or spec.repetitions):
                seed = int(_digest([spec.seed, generator.name, point, repetition])[:8], 16) >> 1
                points.append((point, seed))
    else:
        rng = np.random.default_rng([spec.seed, index])
        for _ in range(spec.n_samples or 0):
            drawn = {k: draw_value(v, rng) for k, v in generator.params.items() if not isinstance(v, Derived)}
            points.append((_resolve_derived(generator, drawn), int(rng.integers(2**31))))
    return points


def _graphs(spec: SweepSpec) -> list[tuple[str, dict[str, Scalar], int]]:
    """(generator, params, graph seed) of every graph of the sweep, in a stable order."""
    return [(generator.name, point, seed)
            for index, generator in enumerate(spec.generators)
            for point, seed in _points(spec, index, generator)]


def expand(spec: SweepSpec | dict[str, Any]) -> list[RunConfig]:
    """All runs of a spec: every graph x cell x task x training seed (x each setting of the
    ``[sparsity]`` tables that take the graph's generator), duplicates removed."""
    spec = validate_spec(spec)
    model = spec.model
    runs: dict[str, RunConfig] = {}
    for ((name, params, graph_seed), sparsity), cell, task, seed in itertools.product(
        _sparse_graphs(spec), model.cells, spec.tasks, spec.seeds
    ):
        run = RunConfig(
            generator=name,
            params=params,
            graph_seed=graph_seed,
            mapping=model.mapping,
            orientation=model.orientation,
            self_loops=model.self_loops,
            gate_layout=model.gate_layout,
            cell=cell,
            task=task,
            train=spec.train,
            seed=seed,
            **{name: getattr(model, name) for name in MODEL_OPTION_DEFAULTS},
            sparsity=sparsity,
        )
        runs.setdefault(run.run_id, run)
    return list(runs.values())


def _sparse_graphs(spec: SweepSpec) -> list[tuple[tuple[str, dict[str, Scalar], int], SparsityRun | None]]:
    """Every graph of the sweep (``_graphs``) with each sparsity setting it is trained with:
    those of the ``[sparsity]`` tables that take its generator (None: the spec has none)."""
    if not spec.sparsity:
        return [(graph, None) for graph in _graphs(spec)]
    return [(graph, run) for graph in _graphs(spec) for section in spec.sparsity
            if not section.generators or graph[0] in section.generators for run in section.runs()]


def sample_runs(runs: list[RunConfig], limit: int | None, seed: int = 0) -> list[RunConfig]:
    """A seeded random sample of ``limit`` runs (all runs when ``limit`` is None), in sweep order."""
    if limit is None or limit >= len(runs):
        return list(runs)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    chosen = np.random.default_rng(seed).choice(len(runs), size=limit, replace=False)
    return [runs[i] for i in sorted(chosen.tolist())]
