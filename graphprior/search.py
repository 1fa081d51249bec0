"""Search over graph priors: random search, regularised evolution, evolution with a
performance-predictor surrogate, and the surrogate's ablation, at equal budgets.

A search spec is a sweep spec (``graphprior.spec``) plus a ``[search]`` table. The sweep
part declares the search space in the sweep language: the ``[[generators]]`` with their
parameter domains (a list is a categorical choice, ``{uniform = [lo, hi]}`` and
``{uniform_int = [lo, hi]}`` ranges, operator tables derived values), ``model.cells``
(several: the cell type is searched), the task, the training settings and the training
seeds every candidate is trained with. ``[search]`` adds the searched model options
(``orientations``, ``self_loops``, ``gate_layouts``; the ``[model]`` table's value when
left out), optionally the sparsity method (``sparsity_methods``) and the **parameter budget** ``max_weights``: the most recurrent weights (the
non-zero entries of ``weight_hh``, all gate blocks) a candidate may have, so a search must
find structure rather than grow capacity.

A :class:`Genome` is one candidate: generator, its free parameters, graph seed, cell,
orientation, self-loops, gate layout and sparsity method. :class:`SearchSpace` samples, mutates and
crosses genomes, and every genome it returns passes the generator's own parameter checks
and the budget. Candidates are trained as ordinary runs by the sweep machinery
(``graphprior.sweep.store_runs``), so their records, with structural features, are in the
results store that ``graphprior predict`` reads.

Strategies (:func:`make_strategy` is the one place that picks one): ``random``;
``evolution``, regularised (aging) evolution with tournament selection (Real et al. 2019);
``surrogate``, the same evolution proposing ``proposals`` children per generation and
training only the ``batch`` best by a ``graphprior.predict`` regressor refitted on the
search's stored results (with an ``explore`` share chosen at random; White et al. 2021);
``evolution-no-surrogate``, the ablation: the same proposals, chosen at random.

Resuming: generation ``g`` draws from ``numpy.random.default_rng([seed, g])`` and the
strategy sees the results of the earlier generations in proposal order, read back from the
store. A killed search started again replays the same proposals, finds their runs stored
and trains only what is missing: nothing lost, nothing trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, ValidationError, model_validator

from graphprior.spec import (
    SPARSITY_METHODS,
    Choice,
    Derived,
    GeneratorSpec,
    PathError,
    RunConfig,
    Scalar,
    SparsityRun,
    SpecError,
    StrictModel,
    SweepSpec,
    Uniform,
    draw_value,
    load_spec,
    resolution_order,
    table_error,
    validate_spec,
)

STRATEGIES = ("random", "evolution", "surrogate", "evolution-no-surrogate")
"""Search strategies: random search, regularised evolution, evolution + surrogate, the ablation."""
ORIENTATIONS = ("symmetric", "random", "dag", "as_given")
GATE_LAYOUTS = ("tiled", "per_gate")
SPARSITY_CHOICES = ("none", *SPARSITY_METHODS)
"""The searchable sparsity methods: ``none`` (the plain prior-masked run) or a sparsity
during learning of ``graphprior.spec.SPARSITY_METHODS`` started from the prior's mask."""
MAX_TRIES = 200
"""Draws a sampler, mutation or crossover makes before it falls back (see each)."""


class SearchError(ValueError):
    """A search cannot go on (e.g. its metric is not among a run's metrics); one line."""


# ---------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------


class SearchSettings(StrictModel):
    """The ``[search]`` table of a search spec.

    ``max_weights``: the parameter budget (recurrent weights per candidate). ``orientations``,
    ``self_loops``, ``gate_layouts``: the searched model options (None: the ``[model]``
    table's one value). ``sparsity_methods``: searched sparsity during learning
    (``SPARSITY_CHOICES``; None: ``none``), each started from the prior's mask at its own
    density (``prior = "start"``), so the budget holds throughout training. ``metric`` of the final epoch is maximised (``mode = "max"``) or
    minimised, averaged over the spec's training seeds; a failed run scores worst.
    ``strategy``: the default strategy (the CLI's ``--strategy`` overrides it). ``batch``
    candidates are trained per generation. Evolution keeps the ``population`` latest
    candidates (the first ``population`` are random), picks parents by tournaments of
    ``tournament``, crosses two parents with probability ``crossover`` and always mutates.
    The surrogate and its ablation propose ``proposals`` children per generation and train
    ``batch`` of them: the surrogate the best predicted by ``regressor``
    (``graphprior.predict.REGRESSORS``), but an ``explore`` share chosen at random.
    """

    max_weights: int = Field(ge=1)
    orientations: tuple[Literal[ORIENTATIONS], ...] | None = Field(default=None, min_length=1)
    self_loops: tuple[bool, ...] | None = Field(default=None, min_length=1)
    gate_layouts: tuple[Literal[GATE_LAYOUTS], ...] | None = Field(default=None, min_length=1)
    sparsity_methods: tuple[Literal[SPARSITY_CHOICES], ...] | None = Field(default=None, min_length=1)
    metric: str = "test_acc"
    mode: Literal["max", "min"] = "max"
    strategy: Literal[STRATEGIES] = "surrogate"
    batch: int = Field(default=4, ge=1, le=10_000)
    population: int = Field(default=10, ge=2)
    tournament: int = Field(default=3, ge=1)
    crossover: float = Field(default=0.3, ge=0.0, le=1.0)
    proposals: int = Field(default=40, ge=1)
    explore: float = Field(default=0.25, ge=0.0, le=1.0)
    regressor: str = "random_forest"

    @model_validator(mode="after")
    def _check_settings(self) -> "SearchSettings":
        from graphprior.predict import REGRESSORS

        if self.tournament > self.population:
            raise PathError(("tournament",), f"must be at most population ({self.population}), got {self.tournament}")
        if self.proposals < self.batch:
            raise PathError(("proposals",), f"must be at least batch ({self.batch}), got {self.proposals}")
        if self.regressor not in REGRESSORS:
            raise PathError(("regressor",), f"unknown regressor {self.regressor!r}; allowed: {', '.join(REGRESSORS)}")
        return self


@dataclass(frozen=True)
class SearchSpec:
    """A validated search spec: the sweep part (the space, task, training) and ``[search]``."""

    sweep: SweepSpec
    settings: SearchSettings

    @property
    def name(self) -> str:
        """The sweep part's name."""
        return self.sweep.name


def validate_search_spec(data: dict[str, Any] | SearchSpec) -> SearchSpec:
    """Validate a search spec given as plain data; raise ``SpecError`` with one line.

    The sweep keys are validated by ``graphprior.spec.validate_spec`` (``sampling`` defaults
    to ``"random"`` here, so ranges are allowed; the search draws its own candidates), the
    ``[search]`` table by :class:`SearchSettings`; then the space must hold a candidate
    within the budget."""
    if isinstance(data, SearchSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a table of keys, got {type(data).__name__}")
    if not isinstance(data.get("search"), dict):
        raise SpecError("search: required table is missing (a search spec is a sweep spec plus a [search] table)")
    if "sparsity" in data:
        raise SpecError("sparsity: not allowed in a search spec (candidates are static prior masks)")
    sweep_data = {k: v for k, v in data.items() if k != "search"}
    if "sampling" not in sweep_data:
        sweep_data |= {"sampling": "random", "n_samples": 1}
    sweep = validate_spec(sweep_data)
    if sweep.model.mapping != "recurrent":
        raise SpecError('model.mapping: a search needs "recurrent" (the hidden size is the graph\'s node count)')
    if sweep.model.gate_layout not in GATE_LAYOUTS:
        raise SpecError(f"model.gate_layout: a search takes {' or '.join(GATE_LAYOUTS)}, got {sweep.model.gate_layout!r}")
    if len(sweep.tasks) != 1:
        raise SpecError(f"tasks: a search scores one task, the spec has {len(sweep.tasks)}")
    try:
        settings = SearchSettings.model_validate(data["search"])
    except ValidationError as error:
        raise table_error("search", SearchSettings, error) from None
    spec = SearchSpec(sweep, settings)
    SearchSpace(spec).check_budget()
    return spec


def load_search_spec(path: str | Path) -> SearchSpec:
    """Read and validate a TOML search spec (``graphprior.spec.load_spec``)."""
    return load_spec(path, validate=validate_search_spec)


# ---------------------------------------------------------------------------------------
# genomes and the space
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Genome:
    """One candidate prior: generator, its free (not derived) parameters, graph seed and the
    model options. Hashable, so a search knows which candidates it has seen."""

    generator: str
    params: tuple[tuple[str, Scalar], ...]
    graph_seed: int
    cell: str
    orientation: str
    self_loops: bool
    gate_layout: str
    sparsity: str = "none"

    def describe(self) -> dict[str, Any]:
        """The genome as plain data (for reports and tables)."""
        return {**dataclasses.asdict(self), "params": dict(self.params)}


_OPTIONS = ("cell", "orientation", "self_loops", "gate_layout", "sparsity")
_SEED_LIMIT = 2**31


class SearchSpace:
    """Sampling, mutation and crossover of genomes of a search spec, always valid.

    Valid means: the generator's own parameter checks pass on the resolved parameters
    (``graphprior.generators.check_parameters``) and the candidate's recurrent weights
    (:meth:`weights`) are at most ``max_weights``. Every operator draws from the ``rng`` it
    is given and nothing else, so the same seed gives the same genomes.
    """

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        model = spec.sweep.model
        self.generators: dict[str, GeneratorSpec] = {g.name: g for g in spec.sweep.generators}
        self.options: dict[str, tuple[Any, ...]] = {
            "cell": tuple(model.cells),
            "orientation": self.settings.orientations or (model.orientation,),
            "self_loops": self.settings.self_loops or (model.self_loops,),
            "gate_layout": self.settings.gate_layouts or (model.gate_layout,),
            "sparsity": self.settings.sparsity_methods or ("none",),
        }
        self._measured: dict[Genome, tuple[int, str]] = {}

    # -- what a genome means

    def free(self, generator: str) -> dict[str, Choice | Uniform]:
        """The parameters of ``generator`` a genome carries (derived ones are computed)."""
        return {k: v for k, v in self.generators[generator].params.items() if not isinstance(v, Derived)}

    def resolved(self, genome: Genome) -> dict[str, Scalar]:
        """All parameters of the genome's generator: its free ones and the derived ones."""
        spec = self.generators[genome.generator]
        values: dict[str, Any] = dict(genome.params)
        for key in resolution_order(spec.params):
            value = spec.params[key]
            if isinstance(value, Derived):
                values[key] = value.evaluate(values)
        return {key: values[key] for key in spec.params}

    def runs(self, genome: Genome) -> list[RunConfig]:
        """The runs that train the genome: one per training seed of the spec."""
        return self.runs_with_seeds(genome, self.spec.sweep.seeds)

    def runs_with_seeds(self, genome: Genome, seeds: Sequence[int]) -> list[RunConfig]:
        """The genome's runs with the given training seeds (re-training on fresh seeds)."""
        sweep = self.spec.sweep
        return [RunConfig(generator=genome.generator, params=self.resolved(genome), graph_seed=genome.graph_seed,
                          mapping="recurrent", orientation=genome.orientation, self_loops=genome.self_loops,
                          gate_layout=genome.gate_layout, cell=genome.cell, task=sweep.tasks[0], train=sweep.train,
                          seed=seed, sparsity=sparsity_run(genome)) for seed in seeds]

    def _measure(self, genome: Genome) -> tuple[int, str]:
        """The candidate's recurrent weights and a digest of its masks, drawn once per genome."""
        if genome not in self._measured:
            masks = run_masks(self.runs_with_seeds(genome, (0,))[0])
            self._measured[genome] = (count_weights(masks, genome.cell), masks_digest(masks))
        return self._measured[genome]

    def weights(self, genome: Genome) -> int:
        """Recurrent weights of the candidate: non-zero entries of ``weight_hh`` over all gate
        blocks (the mask's edges times the gate count when tiled)."""
        return self._measure(genome)[0]

    def identity(self, genome: Genome) -> tuple[str, str, str, str]:
        """What decides a candidate's training: its masks, cell, gate layout and sparsity
        method. Genomes of one identity (a deterministic generator under two graph seeds, say)
        train the same network, so a search counts them as one candidate."""
        return (self._measure(genome)[1], genome.cell, genome.gate_layout, genome.sparsity)

    def problem(self, genome: Genome) -> str | None:
        """Why ``genome`` is not a valid candidate (None when it is): a parameter the generator
        rejects, a graph its mapping rejects, or more recurrent weights than the budget."""
        over = self.over_budget(genome)
        if over is None or isinstance(over, str):
            return over
        return f"{over} recurrent weights, over the budget of {self.settings.max_weights}"

    def over_budget(self, genome: Genome) -> int | str | None:
        """None for a valid candidate; its weight count when only the budget rules it out;
        else why it cannot be built at all."""
        from graphprior.generators import check_parameters

        try:
            check_parameters(genome.generator, **self.resolved(genome))
            weights = self.weights(genome)
        except (ValueError, SpecError) as error:
            return str(error)
        return weights if weights > self.settings.max_weights else None

    def valid(self, genome: Genome) -> bool:
        """Whether ``genome`` is a valid candidate within the budget."""
        return self.problem(genome) is None

    # -- operators

    def _draw_genome(self, rng: np.random.Generator) -> Genome:
        generator = list(self.generators)[int(rng.integers(len(self.generators)))]
        params = tuple((k, draw_value(v, rng)) for k, v in self.free(generator).items())
        options = {name: values[int(rng.integers(len(values)))] for name, values in self.options.items()}
        return Genome(generator, params, int(rng.integers(_SEED_LIMIT)), **options)

    def sample(self, rng: np.random.Generator) -> Genome:
        """A uniformly drawn valid genome (rejection sampling; raises SearchError when
        ``MAX_TRIES`` draws find none, which :meth:`check_budget` rules out up front)."""
        for _ in range(MAX_TRIES):
            genome = self._draw_genome(rng)
            if self.valid(genome):
                return genome
        raise SearchError(f"search.max_weights: no valid candidate in {MAX_TRIES} draws from the search space")

    def check_budget(self) -> None:
        """Raise SpecError when no candidate of ``MAX_TRIES`` seeded draws is valid: naming
        ``search.max_weights`` (and the smallest drawn) when some could be built, else the
        first reason none could (a generator's parameter, an orientation its graphs refuse)."""
        rng = np.random.default_rng(0)
        smallest, unbuildable = None, None
        for _ in range(MAX_TRIES):
            over = self.over_budget(self._draw_genome(rng))
            if over is None:
                return
            if isinstance(over, str):
                unbuildable = unbuildable or over
            else:
                smallest = min(over, smallest or math.inf)
        if smallest is None:
            raise SpecError(f"search: no candidate of {MAX_TRIES} drawn from the search space can be built; "
                            f"the first: {unbuildable}")
        raise SpecError(f"search.max_weights: no candidate of {MAX_TRIES} drawn from the search space has at most "
                        f"{self.settings.max_weights} recurrent weights (the smallest drawn has {smallest})")

    def genes(self, genome: Genome) -> list[str]:
        """The genes a mutation may change: free parameters with more than one value, the
        graph seed, the searched options and (with several generators) the generator."""
        names = [f"param:{k}" for k, v in self.free(genome.generator).items()
                 if not (isinstance(v, Choice) and len(v.values) == 1)
                 and not (isinstance(v, Uniform) and v.low == v.high)]
        names += ["graph_seed"] + [name for name, values in self.options.items() if len(values) > 1]
        return names + (["generator"] if len(self.generators) > 1 else [])

    def _mutated(self, genome: Genome, gene: str, rng: np.random.Generator) -> Genome:
        if gene == "generator":
            others = [g for g in self.generators if g != genome.generator]
            generator = others[int(rng.integers(len(others)))]
            params = tuple((k, draw_value(v, rng)) for k, v in self.free(generator).items())
            return dataclasses.replace(genome, generator=generator, params=params)
        if gene == "graph_seed":
            return dataclasses.replace(genome, graph_seed=int(rng.integers(_SEED_LIMIT)))
        if gene in _OPTIONS:
            others = [v for v in self.options[gene] if v != getattr(genome, gene)]
            return dataclasses.replace(genome, **{gene: others[int(rng.integers(len(others)))]})
        name = gene.removeprefix("param:")
        params = dict(genome.params)
        params[name] = _perturb(self.free(genome.generator)[name], params[name], rng)
        return dataclasses.replace(genome, params=tuple(params.items()))

    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """A valid genome differing from ``genome`` in one gene (chosen uniformly): a
        parameter moved to a neighbouring value, a new graph seed, another option or
        generator. After ``MAX_TRIES`` invalid tries, a fresh sample."""
        genes = self.genes(genome)
        for _ in range(MAX_TRIES):
            child = self._mutated(genome, genes[int(rng.integers(len(genes)))], rng)
            if child != genome and self.valid(child):
                return child
        return self.sample(rng)

    def crossover(self, first: Genome, second: Genome, rng: np.random.Generator) -> Genome:
        """A valid child taking each gene from one parent or the other (uniform crossover);
        parents of different generators give the generator, its parameters and graph seed
        of one parent. After ``MAX_TRIES`` invalid children, ``first``."""
        for _ in range(MAX_TRIES):
            child = self._crossed(first, second, rng)
            if self.valid(child):
                return child
        return first

    def _crossed(self, first: Genome, second: Genome, rng: np.random.Generator) -> Genome:
        pick = lambda a, b: a if rng.random() < 0.5 else b  # noqa: E731
        options = {name: pick(getattr(first, name), getattr(second, name)) if len(self.options[name]) > 1
                   else getattr(first, name) for name in _OPTIONS}
        if first.generator == second.generator:
            other = dict(second.params)
            params = tuple((k, pick(v, other[k])) for k, v in first.params)
            return Genome(first.generator, params, pick(first.graph_seed, second.graph_seed), **options)
        parent = pick(first, second)
        return Genome(parent.generator, parent.params, parent.graph_seed, **options)


def sparsity_run(genome: Genome) -> SparsityRun | None:
    """The run's sparsity setting: None for ``none``, else the method started from the prior's
    mask (one mask per gate with the ``per_gate`` layout, whose gates have their own priors)."""
    if genome.sparsity == "none":
        return None
    return SparsityRun(method=genome.sparsity, prior="start",
                       masks="per_gate" if genome.gate_layout == "per_gate" else "shared")


def _perturb(domain: Choice | Uniform, value: Scalar, rng: np.random.Generator) -> Scalar:
    """A neighbouring value in a parameter's domain: another choice (the next one up or
    down when the choices are ordered numbers), or a step of about a tenth of the range."""
    if isinstance(domain, Choice):
        values = list(domain.values)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and value in values:
            ordered = sorted(values)
            index = ordered.index(value) + (1 if rng.random() < 0.5 else -1)
            return ordered[min(max(index, 0), len(ordered) - 1)]
        return values[int(rng.integers(len(values)))]
    width = domain.high - domain.low
    if domain.integer:
        step = max(1, round(width / 10))
        moved = int(value) + int(rng.integers(-step, step + 1))
        return int(min(max(moved, domain.low), domain.high))
    return float(np.clip(float(value) + rng.normal(0.0, width / 10), domain.low, domain.high))


def run_masks(config: RunConfig) -> list[Any]:
    """The run's boolean hidden-to-hidden masks as the model is built from them
    (``graphprior.sweep.prior_graphs``, ``graphprior.priors``): one, tiled over the gates,
    or one per gate with the ``per_gate`` layout."""
    from graphprior.priors import recurrent_mask
    from graphprior.sweep import prior_graphs

    return [recurrent_mask(g, orientation=config.orientation, self_loops=config.self_loops, seed=config.graph_seed)
            for g in prior_graphs(config)]


def count_weights(masks: Sequence[Any], cell: str) -> int:
    """Non-zero entries of ``weight_hh`` over all gate blocks: a single mask's edges times the
    cell's gate count (tiled), else the per-gate masks' edges summed."""
    from rnn_models.masked import GATES

    edges = sum(int(mask.sum()) for mask in masks)
    return edges * GATES[cell] if len(masks) == 1 else edges


def masks_digest(masks: Sequence[Any]) -> str:
    """A hash of the masks' shapes and entries: equal for equal masks."""
    digest = hashlib.sha256()
    for mask in masks:
        array = np.asarray(mask, dtype=bool)
        digest.update(repr(array.shape).encode() + np.packbits(array).tobytes())
    return digest.hexdigest()


def recurrent_weights(config: RunConfig) -> int:
    """The run's recurrent weights: non-zero entries of its ``weight_hh`` mask over all gate
    blocks (:func:`count_weights` of :func:`run_masks`)."""
    return count_weights(run_masks(config), config.cell)


# ---------------------------------------------------------------------------------------
# candidates with results, the surrogate's features
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A trained candidate: its genome, score (NaN when its runs failed) and features."""

    genome: Genome
    score: float
    features: dict[str, float]
    run_ids: tuple[str, ...]


def genome_columns(space: SearchSpace, genome: Genome) -> dict[str, float]:
    """The genome's options and budget use as numbers: one-hot generator, cell, orientation,
    gate layout and sparsity method (those the space searches), self-loops, recurrent weights
    (features besides the graph's structure)."""
    columns = {f"generator={g}": float(genome.generator == g) for g in space.generators}
    for name in ("cell", "orientation", "gate_layout", "sparsity"):
        if len(space.options[name]) > 1:
            columns |= {f"{name}={v}": float(getattr(genome, name) == v) for v in space.options[name]}
    return columns | {"self_loops": float(genome.self_loops), "recurrent_weights": float(space.weights(genome))}


def candidate_features(space: SearchSpace, genome: Genome) -> dict[str, float]:
    """What the surrogate reads of an untrained candidate: the structural features its runs
    store (``graphprior.sweep.structural_features`` of its graphs) and :func:`genome_columns`."""
    from graphprior.sweep import prior_graphs, structural_features

    graphs = prior_graphs(space.runs_with_seeds(genome, (0,))[0])
    return {**structural_features(graphs), **genome_columns(space, genome)}


def _sign(mode: str) -> float:
    return 1.0 if mode == "max" else -1.0


def ranking_score(candidate: Candidate, mode: str) -> float:
    """Higher is better whatever ``mode``; a failed candidate ranks last."""
    return -math.inf if math.isnan(candidate.score) else _sign(mode) * candidate.score


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One generation's proposals (``proposed``), the chosen ones to train (``chosen``) and,
    for the surrogate, the predicted score of every proposal (None before it is fitted)."""

    proposed: list[Genome]
    chosen: list[Genome]
    predicted: list[float] | None = None


class Strategy(Protocol):
    """Proposes the next generation from the candidates trained so far."""

    def propose(self, history: Sequence[Candidate], want: int, seen: set[Hashable],
                rng: np.random.Generator) -> Generation: ...


@dataclass
class RandomSearch:
    """Uniform random search over the space."""

    space: SearchSpace

    def propose(self, history: Sequence[Candidate], want: int, seen: set[Hashable],
                rng: np.random.Generator) -> Generation:
        """``want`` new random candidates."""
        chosen = _unseen(lambda: self.space.sample(rng), want, seen, self.space.identity)
        return Generation(chosen, chosen)


@dataclass
class Evolution:
    """Regularised (aging) evolution with tournament selection (Real et al. 2019).

    The population is the ``population`` latest candidates (the oldest die first); the
    first ``population`` candidates are random. A child is the best of ``tournament``
    random members, crossed with a second winner with probability ``crossover``, then
    mutated. ``selector`` picks which of ``pool`` children per generation are trained:
    None (``pool`` is ignored: ``want`` children, plain evolution), ``"random"`` (the
    ablation) or ``"surrogate"`` (the best predicted, ``explore`` of them at random).
    """

    space: SearchSpace
    selector: Literal["random", "surrogate"] | None = None
    seed: int = 0

    def propose(self, history: Sequence[Candidate], want: int, seen: set[Hashable],
                rng: np.random.Generator) -> Generation:
        """``want`` new candidates: random ones until the population is full, then children
        (of which the selector picks ``want`` from ``proposals``)."""
        settings = self.space.settings
        if len(history) < settings.population:
            chosen = _unseen(lambda: self.space.sample(rng), min(want, settings.population - len(history)), seen,
                             self.space.identity)
            return Generation(chosen, chosen)
        population = list(history[-settings.population:])
        size = want if self.selector is None else max(settings.proposals, want)
        pool = _unseen(lambda: self._child(population, rng), size, seen, self.space.identity)
        if self.selector is None:
            return Generation(pool, pool)
        if self.selector == "random":
            order = rng.permutation(len(pool))[:want]
            return Generation(pool, [pool[i] for i in sorted(order)])
        predicted = self._predict(history, pool)
        chosen = select_by_prediction(predicted, want, settings.explore, rng)
        return Generation(pool, [pool[i] for i in chosen], predicted.tolist())

    def _tournament(self, population: Sequence[Candidate], rng: np.random.Generator) -> Genome:
        entrants = rng.choice(len(population), size=self.space.settings.tournament, replace=False)
        best = max(entrants, key=lambda i: (ranking_score(population[i], self.space.settings.mode), -i))
        return population[best].genome

    def _child(self, population: Sequence[Candidate], rng: np.random.Generator) -> Genome:
        parent = self._tournament(population, rng)
        if rng.random() < self.space.settings.crossover:
            parent = self.space.crossover(parent, self._tournament(population, rng), rng)
        return self.space.mutate(parent, rng)

    def _predict(self, history: Sequence[Candidate], pool: Sequence[Genome]) -> np.ndarray:
        """Predicted scores (higher is better) of ``pool`` by the regressor refitted on the
        trained candidates (failed ones left out)."""
        import pandas as pd

        from graphprior.predict import make_regressor

        trained = [c for c in history if not math.isnan(c.score)]
        columns = list(trained[0].features) if trained else []
        targets = np.array([c.score for c in trained])
        if len(trained) < 2 or np.ptp(targets) == 0:
            return np.zeros(len(pool))  # nothing to learn yet: the choice falls to the tie order
        model = make_regressor(self.space.settings.regressor, seed=self.seed)
        model.fit(pd.DataFrame([c.features for c in trained], columns=columns).fillna(0.0), targets)
        features = pd.DataFrame([candidate_features(self.space, g) for g in pool], columns=columns)
        return _sign(self.space.settings.mode) * model.predict(features.fillna(0.0))


def select_by_prediction(predicted: np.ndarray, want: int, explore: float, rng: np.random.Generator) -> list[int]:
    """Indices of the candidates to train, in proposal order: the ``want - round(explore *
    want)`` highest predicted (ties: earlier first), and the rest drawn at random from the
    others (exploration)."""
    want = min(want, len(predicted))
    exploring = min(round(explore * want), want)
    order = sorted(range(len(predicted)), key=lambda i: (-predicted[i], i))
    best, others = order[: want - exploring], order[want - exploring:]
    picked = rng.choice(len(others), size=exploring, replace=False) if exploring else []
    return sorted(best + [others[i] for i in picked])


def _unseen(draw: Callable[[], Genome], count: int, seen: set[Hashable],
            identity: Callable[[Genome], Hashable]) -> list[Genome]:
    """``count`` genomes from ``draw`` of distinct identities not in ``seen`` (fewer when
    ``MAX_TRIES`` draws per genome find none: a small space exhausted)."""
    found: list[Genome] = []
    taken: set[Hashable] = set()
    for _ in range(count):
        for _ in range(MAX_TRIES):
            genome = draw()
            key = identity(genome)
            if key not in seen and key not in taken:
                found.append(genome)
                taken.add(key)
                break
    return found


def make_strategy(name: str, space: SearchSpace, seed: int = 0) -> Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``): the one place that picks one."""
    if name == "random":
        return RandomSearch(space)
    if name == "evolution":
        return Evolution(space, None, seed)
    if name == "surrogate":
        return Evolution(space, "surrogate", seed)
    if name == "evolution-no-surrogate":
        return Evolution(space, "random", seed)
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """What a search did: every trained candidate in the order proposed, each generation,
    how many candidates were proposed and how many runs this call trained."""

    spec: SearchSpec
    strategy: str
    seed: int
    candidates: list[Candidate]
    generations: list[Generation]
    trained_runs: int
    seconds: float

    @property
    def best(self) -> Candidate:
        """The best trained candidate (the earliest among equals)."""
        mode = self.spec.settings.mode
        return max(self.candidates, key=lambda c: ranking_score(c, mode))

    def best_so_far(self) -> list[float]:
        """The best score after each trained candidate (NaN until one succeeds)."""
        curve, best = [], math.nan
        sign = _sign(self.spec.settings.mode)
        for candidate in self.candidates:
            if not math.isnan(candidate.score) and (math.isnan(best) or sign * candidate.score > sign * best):
                best = candidate.score
            curve.append(best)
        return curve

    @property
    def proposed(self) -> int:
        """Candidates proposed in all (more than trained with the surrogate and its ablation)."""
        return sum(len(g.proposed) for g in self.generations)


def run_search(spec: SearchSpec | dict[str, Any], store: str | Path, budget: int, *, strategy: str | None = None,
               seed: int | None = None, backend: str = "local", workers: int | None = None,
               address: str | None = None, executor: Any = None, progress: bool = True) -> SearchResult:
    """Search ``spec``'s space for the best prior with ``budget`` trained candidates.

    Each generation's candidates are trained as runs by ``graphprior.sweep.store_runs``
    (skipping runs already stored) on the executor (``backend``: local pool, Ray, serial),
    then their results are read back from ``store`` in proposal order. ``seed`` (default:
    the spec's) seeds the proposals; ``strategy`` defaults to the spec's.
    """
    import time

    from tqdm.auto import tqdm

    from graphprior.executors import make_executor

    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    spec = validate_search_spec(spec)
    name = strategy or spec.settings.strategy
    seed = spec.sweep.seed if seed is None else seed
    space = SearchSpace(spec)
    chooser = make_strategy(name, space, seed)
    executor = executor or make_executor(backend, workers=workers, address=address)
    candidates: list[Candidate] = []
    generations: list[Generation] = []
    seen: set[Hashable] = set()
    trained, start = 0, time.perf_counter()
    bar = tqdm(total=budget, unit="candidate", desc=f"search {name}", disable=not progress, dynamic_ncols=True)
    with bar:
        while len(candidates) < budget:
            rng = np.random.default_rng([seed, len(generations)])
            # always a whole batch, cut to what the budget has left: a later, larger --budget
            # proposes the same generation and keeps the candidates trained from it
            generation = chooser.propose(candidates, spec.settings.batch, seen, rng)
            generation = dataclasses.replace(generation, chosen=generation.chosen[:budget - len(candidates)])
            if not generation.chosen:
                break  # the space is exhausted
            generations.append(generation)
            results, newly = _evaluate(space, generation.chosen, store, executor)
            trained += newly
            candidates += results
            seen.update(space.identity(g) for g in generation.chosen)
            bar.update(len(results))
            best = max((ranking_score(c, spec.settings.mode) for c in candidates), default=-math.inf)
            bar.set_postfix({"best": _sign(spec.settings.mode) * best}, refresh=False)
    return SearchResult(spec, name, seed, candidates, generations, trained, time.perf_counter() - start)


def _evaluate(space: SearchSpace, genomes: Sequence[Genome], store: str | Path, executor: Any) -> tuple[list[Candidate], int]:
    """Train the genomes' runs not stored yet and read every result back from the store:
    the candidates, in order, and how many runs were trained now."""
    from graphprior.store import ResultsStore, store_errors
    from graphprior.sweep import run_group, store_runs

    runs = {genome: space.runs(genome) for genome in genomes}
    summary = store_runs([r for group in runs.values() for r in group], store, run_group, executor,
                         name="candidates", progress=False)
    with ResultsStore(store, readonly=True) as results, store_errors(store):
        records = results.records_for(r.run_id for group in runs.values() for r in group)
    return [_candidate(space, genome, [records[r.run_id] for r in runs[genome]]) for genome in genomes], \
        summary.done + summary.failed


def _candidate(space: SearchSpace, genome: Genome, records: Sequence[Any]) -> Candidate:
    """A genome's result from its stored records: the mean metric over its training seeds
    (NaN when a run failed), and :func:`candidate_features` (a sparsity run stores the
    features of its final mask; the surrogate reads every candidate by its prior)."""
    metric = space.settings.metric
    done = [r for r in records if r.status == "done"]
    for record in done:
        if metric not in record.metrics:
            raise SearchError(f"search.metric: {metric!r} is not a metric of this task's runs; they have "
                              f"{', '.join(sorted(record.metrics))}")
    values = [float(r.metrics[metric]) if r.metrics[metric] is not None else math.nan for r in done]
    score = float(np.mean(values)) if len(done) == len(records) and values else math.nan
    return Candidate(genome, score, candidate_features(space, genome), tuple(r.run_id for r in records))


# ---------------------------------------------------------------------------------------
# the best prior: re-training, files
# ---------------------------------------------------------------------------------------


def fresh_seeds(spec: SearchSpec, count: int) -> list[int]:
    """``count`` training seeds the search never used (after the spec's largest)."""
    first = max(spec.sweep.seeds) + 1
    return list(range(first, first + count))


def retrain(space: SearchSpace, genome: Genome, seeds: Sequence[int], store: str | Path, executor: Any) -> list[float]:
    """Train ``genome`` again with ``seeds`` (into ``store``, resumable) and return its metric
    per seed: a search's best is biased upwards by selection; this figure is not."""
    from graphprior.store import ResultsStore, store_errors
    from graphprior.sweep import run_group, store_runs

    runs = space.runs_with_seeds(genome, seeds)
    store_runs(runs, store, run_group, executor, name="retrain", progress=False)
    with ResultsStore(store, readonly=True) as results, store_errors(store):
        records = results.records_for(r.run_id for r in runs)
    return [float(records[r.run_id].metrics.get(space.settings.metric, math.nan))
            if records[r.run_id].status == "done" else math.nan for r in runs]


def history_frame(result: SearchResult) -> Any:
    """One row per trained candidate in proposal order: index, generation, genome, score,
    best so far."""
    import pandas as pd

    space = SearchSpace(result.spec)
    generation_of = {g: i for i, gen in enumerate(result.generations) for g in gen.chosen}
    rows = []
    for index, (candidate, best) in enumerate(zip(result.candidates, result.best_so_far())):
        rows.append({"candidate": index, "generation": generation_of[candidate.genome],
                     **genome_row(space, candidate.genome),
                     "recurrent_weights": candidate.features.get("recurrent_weights"),
                     "score": candidate.score, "best_so_far": best, "run_ids": " ".join(candidate.run_ids)})
    return pd.DataFrame(rows)


def genome_row(space: SearchSpace, genome: Genome) -> dict[str, Any]:
    """A genome as flat columns: generator, every parameter (derived ones too), graph seed, options."""
    return {"generator": genome.generator, **space.resolved(genome), "graph_seed": genome.graph_seed,
            **{name: getattr(genome, name) for name in _OPTIONS}}


def write_outputs(result: SearchResult, folder: str | Path, retrained: Sequence[float] = ()) -> dict[str, Path]:
    """Write the best prior and the report into ``folder``: ``best.graphml`` (and
    ``best_gate<i>.graphml`` per further gate graph), ``best_features.csv``,
    ``history.csv``, ``best_so_far.png`` and ``report.md``; return their paths by kind."""
    import pandas as pd

    from graphprior.generators import save_graph
    from graphprior.plots import best_so_far
    from graphprior.sweep import prior_graphs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(result.spec)
    best = result.best
    graphs = prior_graphs(space.runs(best.genome)[0])
    paths = {"graph": save_graph(graphs[0], folder / "best.graphml")}
    for index, graph in enumerate(graphs[1:], start=1):
        save_graph(graph, folder / f"best_gate{index}.graphml")
    row = {**genome_row(space, best.genome), "score": best.score, **best.features}
    paths["features"] = folder / "best_features.csv"
    pd.DataFrame([row]).to_csv(paths["features"], index=False)
    paths["history"] = folder / "history.csv"
    history_frame(result).to_csv(paths["history"], index=False)
    paths["plot"] = folder / "best_so_far.png"
    figure = best_so_far({result.strategy: [result.best_so_far()]}, metric=result.spec.settings.metric)
    figure.savefig(paths["plot"], dpi=120, bbox_inches="tight")
    paths["report"] = folder / "report.md"
    paths["report"].write_text(report(result, space, retrained), encoding="utf-8")
    return paths


def report(result: SearchResult, space: SearchSpace, retrained: Sequence[float] = ()) -> str:
    """The short markdown report of a search: settings, the best prior, its re-trained score."""
    settings, best = result.spec.settings, result.best
    genome = best.genome
    params = ", ".join(f"{k}={v!r}" for k, v in space.resolved(genome).items())
    lines = [
        f"# Search `{result.spec.name}`: {result.strategy}, seed {result.seed}",
        "",
        f"- candidates trained: {len(result.candidates)} (proposed: {result.proposed}), "
        f"{len(result.generations)} generations of up to {settings.batch}",
        f"- parameter budget: at most {settings.max_weights} recurrent weights per candidate",
        f"- score: final-epoch `{settings.metric}` ({settings.mode}), mean over training seeds "
        f"{list(result.spec.sweep.seeds)}",
        "",
        "## Best prior",
        "",
        f"- score {best.score:.4f} (candidate {result.candidates.index(best)} of {len(result.candidates)})",
        f"- {genome.generator}({params}), graph seed {genome.graph_seed}",
        f"- cell {genome.cell}, orientation {genome.orientation}, self-loops {genome.self_loops}, "
        f"gate layout {genome.gate_layout}, sparsity {genome.sparsity}",
        f"- recurrent weights: {space.weights(genome)} of {settings.max_weights}",
        f"- structural features: nodes {best.features.get('nodes')}, edges {best.features.get('edges')}, "
        f"density {best.features.get('density', math.nan):.3f}",
        "",
    ]
    if retrained:
        values = np.asarray(retrained, dtype=float)
        lines += [f"Re-trained on {len(values)} fresh training seeds: {np.nanmean(values):.4f} "
                  f"(± {np.nanstd(values):.4f}; per seed {', '.join(f'{v:.4f}' for v in values)}). "
                  "The search's best is biased upwards by selection; this figure is not.", ""]
    lines += ["Files: `best.graphml` (the graph), `best_features.csv`, `history.csv` (every candidate), "
              "`best_so_far.png`.", ""]
    return "\n".join(lines)
