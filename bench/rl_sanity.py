"""Why the cell methods keep ρ ≈ 0.4 under a fully randomized Q-network (docs/methods.md, issue 16).

On the states ``mmcam evaluate --task action`` scores (same fresh seeds, the greedy action of
the trained ``zoo:qnet`` as the fixed target), each method's 7×7 cell map from the trained
network and from the network after the *last* stage of the cascading randomization
(:func:`mmcam.metrics.sanity.cascading_randomization`, same seed, so the random network is
the one ``evaluate``'s ``ρ randomized`` column uses; checked on every run). Columns, means
over states:

- ``ρ all``: Spearman of ``|map|`` over all 49 cells (``evaluate``'s ``ρ randomized``);
- ``ρ occupied``: the same over the occupied cells only (agent, goal, walls; 10 per state);
- ``ρ model-free``: Spearman over all cells of the trained map with the *model-free* map,
  1 on the occupied cells and 0 elsewhere (what any network's cell map shares);
- ``ρ random vs model-free``: the same for the randomized network's map;
- ``zero on occupied``: share of occupied cells the map gives exactly 0 (trained / random).

``sarfa-toggle`` also scores the empty cells (filled with a wall), so its zeros are not the
observation's.

    python -m bench.rl_sanity --images 200      # --shift: the 14-wall grids
"""

from __future__ import annotations

import argparse
import copy

import torch


def _maps(model, states, method):
    from mmcam.tasks.action import explain_action

    out = []
    for state, a in states:
        out.append(torch.tensor(explain_action(model, torch.from_numpy(state.obs), action=a, method=method).meta["cell_maps"][0]).float())
    return torch.stack(out)


def _randomized(model, seed):
    """The network after every cascading-randomization stage, as the sanity check builds it."""
    from mmcam.metrics.sanity import _reinitialize, randomization_stages

    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stage in randomization_stages(work):
            with torch.no_grad():
                for name in stage:
                    _reinitialize(modules[name])
    return work


def _rho_on(a, b, mask):
    from mmcam.metrics.sanity import spearman

    return torch.stack([spearman(x[m][None], y[m][None])[0] for x, y, m in zip(a, b, mask)])


def main(argv=None):
    from mmcam import zoo
    from mmcam.data import GridConfig, generate_grids
    from mmcam.evaluation.runner import FRESH_SEEDS
    from mmcam.metrics.sanity import cascading_randomization, spearman

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", action="store_true")
    p.add_argument("--method", default="sarfa,cell-occlusion,shapley,sarfa-toggle,gradcam,scorecam")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = zoo.load("qnet")
    grids = generate_grids(args.images, FRESH_SEEDS + args.seed, GridConfig(n_walls=14) if args.shift else GridConfig())
    with torch.no_grad():
        states = [(g, int(model(torch.from_numpy(g.obs)[None])[0].argmax())) for g in grids]
    occupied = torch.stack([torch.from_numpy(g.obs).ne(0).any(0) for g in grids]).flatten(1)
    free = occupied.float()
    random_net = _randomized(model, args.seed)
    print(f"{len(states)} states ({'14' if args.shift else '8'} walls), {occupied.sum(1).float().mean():.1f} occupied cells per state")
    print("| method | ρ all (evaluate's) | ρ occupied | ρ model-free | ρ random vs model-free | zero on occupied, trained / random |")
    print("|---|---|---|---|---|---|")
    for method in args.method.split(","):
        trained, rand = _maps(model, states, method).flatten(1).abs(), _maps(random_net, states, method).flatten(1).abs()
        if method == args.method.split(",")[0]:  # the same random network as evaluate's sanity check
            check = cascading_randomization(model, lambda m, method=method: _maps(m, states[:8], method), seed=args.seed)
            torch.testing.assert_close(torch.tensor(check.per_map[-1]), spearman(trained[:8], rand[:8]))
        rho_all = spearman(trained, rand).mean()
        rho_occ = _rho_on(trained, rand, occupied).mean()
        rho_free, rho_free_r = spearman(trained, free).mean(), spearman(rand, free).mean()
        zt = ((trained == 0) & occupied).sum() / occupied.sum()
        zr = ((rand == 0) & occupied).sum() / occupied.sum()
        print(f"| {method} | {rho_all:.3f} | {rho_occ:.3f} | {rho_free:.3f} | {rho_free_r:.3f} | {zt:.2f} / {zr:.2f} |")


if __name__ == "__main__":
    main()
