"""Why the zoo Q-network picks its action in a gridworld (DQN-style conv net), offline.

    python examples/action.py [--out out/examples/action] [--states 3]

Explains the greedy action's Q-value; the map should sit on the agent, the goal and the
walls that block the way. Writes one overlay per state and a JSON.
"""

from __future__ import annotations

import argparse

import mmcam
from mmcam.data import GridConfig, generate_grids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/examples/action")
    parser.add_argument("--states", type=int, default=3)
    args = parser.parse_args(argv)
    model, _ = mmcam.zoo.load("qnet")
    for i, state in enumerate(generate_grids(args.states, 7, GridConfig())):
        exp = mmcam.explain_action(model, state.obs, image=state.obs_image(8))
        exp.save(args.out, stem=f"state{i}")
        print(f"state {i}: action {exp.items[0]!r} (optimal: {state.optimal_action}), Q = {exp.meta['q_values']}")


if __name__ == "__main__":
    main()
