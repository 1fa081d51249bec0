"""The ``graphprior`` command: one click group, one module per subcommand family.

Each subcommand lives in its own module under ``graphprior.cli`` and is imported
lazily, so ``graphprior --help`` stays fast and a missing optional extra (Ray) only
affects the subcommand that needs it.
"""

from __future__ import annotations

import importlib

import click

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
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self._load(name) is not None)

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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graphprior")
def main() -> None:
    """Network-science priors for recurrent neural networks.

    Generate random graphs, turn them into masked RNN/LSTM/GRU weights, train them on
    Reber-grammar benchmarks, tabulate structural features and predict performance
    from structure alone.
    """
