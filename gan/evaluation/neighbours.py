"""Manifold metrics from k-nearest-neighbour balls on classifier features.

Improved precision and recall (Kynkaanniemi et al. 2019, k = 3) and density and coverage
(Naeem et al. 2020, k = 5). A real (fake) point's ball has the radius of its k-th nearest
other real (fake) point. Distances are computed in blocks so 10,000 x 10,000 fits in memory.
"""
import numpy as np

BLOCK = 1000


def _sq_dists(a, b, b_sq):
    d = (a * a).sum(1)[:, None] + b_sq[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def kth_radii_sq(x, ks):
    """{k: squared distance from each point to its k-th nearest other point}."""
    x_sq = (x * x).sum(1)
    out = {k: np.empty(len(x)) for k in ks}
    for s in range(0, len(x), BLOCK):
        d = _sq_dists(x[s:s + BLOCK], x, x_sq)
        # Index 0 of each sorted row is the point itself (distance 0), so the k-th other is index k.
        part = np.partition(d, sorted(ks), axis=1)
        for k in ks:
            out[k][s:s + BLOCK] = part[:, k]
    return out


def prdc(real_features, fake_features, k_pr=3, k_dc=5):
    """{'precision', 'recall', 'density', 'coverage'} of fakes against reals."""
    real, fake = (np.asarray(f, np.float64) for f in (real_features, fake_features))
    for name, f, k in (("real", real, max(k_pr, k_dc)), ("fake", fake, k_pr)):
        if len(f) <= k:
            raise ValueError(f"Neighbour metrics need more than {k} {name} images, got {len(f)}.")
    real_r = kth_radii_sq(real, (k_pr, k_dc))
    fake_r = kth_radii_sq(fake, (k_pr,))[k_pr]
    fake_sq = (fake * fake).sum(1)
    in_real_manifold = np.zeros(len(fake), bool)  # precision: fake inside some real's k_pr-ball
    recalled = np.zeros(len(real), bool)  # recall: real inside some fake's k_pr-ball
    covered = np.zeros(len(real), bool)  # coverage: some fake inside the real's k_dc-ball
    density_count = 0
    for s in range(0, len(real), BLOCK):
        d = _sq_dists(real[s:s + BLOCK], fake, fake_sq)  # (block of reals, fakes)
        in_pr = d <= real_r[k_pr][s:s + BLOCK, None]
        in_dc = d <= real_r[k_dc][s:s + BLOCK, None]
        in_real_manifold |= in_pr.any(0)
        recalled[s:s + BLOCK] = (d <= fake_r[None, :]).any(1)
        covered[s:s + BLOCK] = in_dc.any(1)
        density_count += int(in_dc.sum())
    return {"precision": float(in_real_manifold.mean()), "recall": float(recalled.mean()),
            "density": density_count / (k_dc * len(fake)), "coverage": float(covered.mean())}
