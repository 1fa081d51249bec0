"""The ``graphprior`` command: one click group, one module per subcommand family.

Each subcommand lives in its own module under ``graphprior.cli`` and is imported
lazily, so ``graphprior --help`` stays fast and a missing optional extra (Ray) only
affects the subcommand that needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import threading
from types import FrameType

import click

from graphprior.cli.errors import out_of_memory

# subcommand name -> (module under graphprior.cli, attribute holding the click command)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "reber": ("reber_cmd", "reber"),
    "generate": ("graphs_cmd", "generate"),
    "features": ("graphs_cmd", "features"),
    "bench": ("bench_cmd", "bench"),
    "table": ("bench_cmd", "table"),
    "demo": ("bench_cmd", "demo"),
    "predict": ("predict_cmd", "predict"),
    "prune": ("prune_cmd", "prune"),
    "store": ("store_cmd", "store"),
    "compare-study": ("study_cmd", "compare_study"),
    "search": ("search_cmd", "search"),
    "topology": ("topology_cmd", "topology"),
}


# subcommand name -> the first paragraph of its help, so that ``graphprior --help`` lists the
# commands without importing them (torch, igraph, scikit-learn: seconds). tests/test_cli_fuzz.py
# checks that each equals the command's own help; a command missing here is imported to list it.
SHORT_HELP: dict[str, str] = {
    "reber": "Reber-grammar strings and datasets (Reber 1967; Hochreiter & Schmidhuber 1997).",
    "generate": "Draw a random graph from GENERATOR and write it to a file.",
    "features": "Compute structural features of graph files (GraphML or edge lists) into one table.",
    "bench": "Train prior-initialized networks on Reber benchmarks, resumably, into a results store.",
    "table": "Write the flat results table of STORE (one row per run: config, features, metrics).",
    "demo": "The toolkit's story end to end, in about two minutes on two cores.",
    "predict": "Predict performance from structure with repeated grouped cross-validation.",
    "prune": "Train, prune, retrain and control the networks of SPEC_FILE (a sweep spec with a "
             "[prune] table) or --preset into --store, skipping stored runs.",
    "store": "Check a results store, or merge the stores of several machines into one.",
    "compare-study": "Compare the runs of STORE with the study's published results, per cell type.",
    "search": "Search the graph priors of SPEC_FILE (a sweep spec with a [search] table) for the best one.",
    "topology": "Report a fixed-budget topology sweep (preset 'topology'): does structure matter beyond size?",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if _built(SUBCOMMANDS[name][0]))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their short help, from ``SHORT_HELP`` where it has them (no imports)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in SHORT_HELP:
                rows.append((name, click.Command(name, help=SHORT_HELP[name]).get_short_help_str(limit)))
            elif (command := self._load(name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; running out of memory is one line (exit code 1), not a traceback."""
        try:
            return super().invoke(ctx)
        except MemoryError:
            raise out_of_memory(ctx.invoked_subcommand) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module_name, attribute = SUBCOMMANDS[name]
        try:
            module = importlib.import_module(f"graphprior.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"graphprior.cli.{module_name}":
                return None  # subcommand not built yet
            raise
        return getattr(module, attribute, None)


def _built(module_name: str) -> bool:
    """Whether the subcommand module exists, found without importing it."""
    return importlib.util.find_spec(f"graphprior.cli.{module_name}") is not None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm(ctx: click.Context) -> None:
    """Make SIGTERM (a scheduler's stop, ``kill PID``) end the command as Ctrl-C does: the runs
    that finished are stored, the workers stopped, one line and exit code 1. The previous
    handler comes back when the command ends (it matters where the CLI runs inside Python)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _interrupt)
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graphprior")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Network-science priors for recurrent neural networks.

    Generate random graphs, turn them into masked RNN/LSTM/GRU weights, train them on
    Reber-grammar benchmarks, tabulate structural features and predict performance
    from structure alone.

    Exit status: 0 when the command did its work; 2 for a usage error (an option or
    argument value that is not allowed, an input graph or table that is missing or
    unreadable); 1 for a runtime error (a spec or store that is missing, invalid, damaged
    or locked, a file that cannot be written, too little memory, a stop by Ctrl-C or
    SIGTERM). Either way the last line on stderr is one line starting "Error:" (a stop
    prints "Aborted!").
    """
    stop_on_sigterm(ctx)
