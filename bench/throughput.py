"""Throughput: runs per second sustained by N threads repeating one action, for several N.

Every action is measured at every concurrency in each round, in rotating order, so that the rounds
spread the machine's background noise over all of them; the rate is all runs over all the time spent.
"""

from __future__ import annotations

from .common import Action, progress, rotated, throughput


def measure(actions: dict[str, Action], levels: list[int], rounds: int, seconds: float) -> dict[str, dict[int, float]]:
    """Runs per second per action name and concurrency."""
    runs = {name: dict.fromkeys(levels, 0) for name in actions}
    spent = {name: dict.fromkeys(levels, 0.0) for name in actions}
    for i in range(rounds):
        for concurrency in levels:
            progress(f"throughput round {i + 1}/{rounds}, concurrency {concurrency}: {seconds:g} s per measure")
            for name in rotated(list(actions), i):
                done, elapsed_s = throughput(actions[name], concurrency, seconds)
                runs[name][concurrency] += done
                spent[name][concurrency] += elapsed_s
    return {name: {c: runs[name][c] / spent[name][c] for c in levels} for name in actions}
