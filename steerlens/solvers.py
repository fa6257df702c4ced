"""Batched sparse coding in torch: elastic net, lasso and OMP over many signals at once.

The problem (PaCE, arXiv 2406.04331, Sec. 3; sklearn's ``ElasticNet`` scaled by the signal length) is

    min_c  1/2 ||y - D c||^2 + alpha * (l1_ratio * ||c||_1 + (1 - l1_ratio) / 2 * ||c||^2)

for every row ``y`` of ``Y`` at once, with ``D`` the dictionary (atoms as columns). The solver is a
working-set method: each signal solves the problem restricted to a small set of atoms (gathered from
the precomputed Gram matrix ``D^T D``), then the optimality (KKT) conditions are checked on *all* atoms;
atoms that violate them join the working set and the restricted problem is solved again. A restricted
problem is first tried with a few primal-dual active-set steps (exact solves on a guessed support), and
only the signals they leave unsolved run FISTA, whose supports are again tried in exact solves early on.
Whatever solves it, a restricted solution is kept only once it meets the KKT conditions.
Work per signal therefore grows with the size of its support, not with the dictionary size, and all
signals move in lock-step as batched tensor operations (CPU or GPU).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int


@dataclass
class Dictionary:
    """A dictionary with its Gram matrix, computed once and reused by every solve."""

    atoms: Float[torch.Tensor, "d k"]
    gram: Float[torch.Tensor, "k k"]
    rows: Float[torch.Tensor, "k d"] | None = None  # the atoms as contiguous rows (fast gathers of a few atoms)

    @classmethod
    def from_atoms(cls, atoms: Float[torch.Tensor, "d k"]) -> Dictionary:
        if atoms.dim() != 2 or atoms.shape[1] == 0:
            raise ValueError(f"atoms must be a [d, k] matrix with k >= 1, got shape {tuple(atoms.shape)}")
        if not torch.isfinite(atoms).all():
            raise ValueError("Dictionary atoms contain NaN or inf")
        return cls(atoms=atoms, gram=atoms.T @ atoms, rows=atoms.T.contiguous())


def objective(
    D: Float[torch.Tensor, "d k"], Y: Float[torch.Tensor, "b d"], C: Float[torch.Tensor, "b k"],
    alpha: float, l1_ratio: float,
) -> Float[torch.Tensor, " b"]:
    """The elastic-net objective per signal (see the module docstring)."""
    r = Y - C @ D.T
    return 0.5 * (r * r).sum(-1) + alpha * (l1_ratio * C.abs().sum(-1) + 0.5 * (1 - l1_ratio) * (C * C).sum(-1))


def kkt_violation(
    D: Float[torch.Tensor, "d k"], Y: Float[torch.Tensor, "b d"], C: Float[torch.Tensor, "b k"],
    alpha: float, l1_ratio: float,
) -> Float[torch.Tensor, "b k"]:
    """Distance of ``0`` from the subdifferential, per coefficient: zero exactly at the optimum.

    With ``g = D^T (D c - y) + l2 c``: for ``c_j != 0`` it is ``|g_j + l1 sign(c_j)|``; for ``c_j = 0``
    it is ``max(|g_j| - l1, 0)``.
    """
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    return _violation((C @ D.T - Y) @ D + l2 * C, C, l1)


def _violation(g: torch.Tensor, C: torch.Tensor, l1: float) -> torch.Tensor:
    """Per-coefficient KKT violation from the smooth part's gradient ``g`` (see ``kkt_violation``)."""
    return torch.where(C != 0, (g + l1 * C.sign()).abs(), (g.abs() - l1).clamp_min(0))


PDAS_ITERS = 10  # primal-dual active-set steps tried on each restricted problem before FISTA
# and only on restricted problems of more atoms than this: on the first round's 8 atoms, where most codes of 2-4
# atoms are found by FISTA's early exact solves, they mostly fail (measured on PaCE's decoding activations)
PDAS_MIN_ATOMS = 8


def _soft(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    return x.sign() * (x.abs() - t).clamp_min(0)


def _largest_eigenvalue(G: Float[torch.Tensor, "b m m"], iters: int = 50) -> Float[torch.Tensor, " b"]:
    """Upper estimate of each batch element's largest eigenvalue (G is PSD): power iteration, then
    a 5% margin, since a step size from an underestimate could make FISTA diverge."""
    if G.shape[-1] <= 32:
        return torch.linalg.eigvalsh(G)[..., -1].clamp_min(1e-12)
    v = torch.ones(G.shape[:-1], dtype=G.dtype, device=G.device)
    for _ in range(iters):
        v = torch.einsum("bij,bj->bi", G, v)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    lam = torch.einsum("bi,bij,bj->b", v, G, v)
    return (1.05 * lam).clamp_min(1e-12)


def _solve_spd(M: Float[torch.Tensor, "b m m"], rhs: Float[torch.Tensor, "b m"]
               ) -> tuple[Float[torch.Tensor, "b m"], Int[torch.Tensor, " b"]]:
    """Solve ``M x = rhs`` for a batch of symmetric matrices, positive definite unless the atoms are dependent
    and there is no ridge (the lasso): a batched Cholesky where it succeeds, a general solve one matrix at a time
    where it does not. Returns ``x`` and ``info``, nonzero where even that failed (singular, or a non-finite
    solution): the caller keeps its previous point there.

    Not a batched LU (``torch.linalg.solve_ex`` on the whole batch): with torch 2.13's CPU build on two threads,
    MKL's batched float32 LU of a few Gram matrices of 256 atoms stops with "Parameter 6 was incorrect on entry
    to SLASWP" and never returns (tests/test_solvers.py reproduces it in a subprocess)."""
    L, info = torch.linalg.cholesky_ex(M)
    x = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    for i in (info != 0).nonzero().flatten().tolist():
        x[i], info[i] = torch.linalg.solve_ex(M[i], rhs[i])
        if not bool(torch.isfinite(x[i]).all()):
            info[i] = max(int(info[i]), 1)
    return x, info


def _polish(G: torch.Tensor, b: torch.Tensor, c: torch.Tensor, l1: float, l2: float,
            kkt_tol: torch.Tensor, prune: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact solve on the current support and signs: ``(G_SS + l2 I) c_S = b_S - l1 sign(c_S)``.

    An iterate of FISTA often still carries a few atoms on their way to zero; where the exact solve flips
    an atom's sign, that atom leaves the support and the solve is repeated (at most ``prune`` times), so
    the first iterate whose support holds the true one already ends the solve. Returns the polished
    coefficients and, per signal, whether they are optimal for the restricted problem (same signs as the
    support they were solved on, and every atom off that support within ``kkt_tol`` of the KKT condition):
    the pruning is a guess, the optimality check is what accepts it.
    """
    act = c != 0
    sign = c.sign()
    ones = torch.ones_like(c)
    for _ in range(prune + 1):
        M = torch.where(act[:, :, None] & act[:, None, :], G, torch.zeros_like(G)) + torch.diag_embed(
            torch.where(act, l2 * ones + 1e-10, ones))
        # a support of dependent atoms with no ridge (the lasso) is singular: such a try is not accepted
        x, info = _solve_spd(M, torch.where(act, b - l1 * sign, torch.zeros_like(b)))
        x = torch.where((info != 0)[:, None], c, x)
        flipped = act & (x.sign() != sign)
        if not bool(flipped.any()):
            break
        act = act & ~flipped
        sign = torch.where(act, sign, torch.zeros_like(sign))
    grad = torch.einsum("bij,bj->bi", G, x) - b + l2 * x
    same_sign = torch.where(act, x.sign() == sign, x == 0).all(-1) & (info == 0)
    off_ok = torch.where(act, torch.zeros_like(grad), grad.abs() - l1).amax(-1) <= kkt_tol[:, 0]
    return x, same_sign & off_ok


def _pdas(G: torch.Tensor, b: torch.Tensor, c0: torch.Tensor, l1: float, l2: float, kkt_tol: torch.Tensor,
          iters: int = PDAS_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal-dual active-set steps (Fan, Jiao and Lu 2014; a semismooth Newton method) on the restricted
    problem, from ``c0``: with the dual ``d = b - (G + l2 I) x``, the atoms where ``|x + d| > l1`` form the
    active set, signed by ``x + d``, and one exact solve on them gives the next ``x``. It stops when the
    active set repeats. The unit step suits the unit atoms (``diag G = 1``). It may not converge from a poor
    start, so the result is returned with, per signal, whether it meets the KKT conditions of the
    restricted problem within ``kkt_tol``; the signals that do not meet them go on to FISTA."""
    x = c0.clone()
    going = torch.arange(G.shape[0], device=G.device)  # signals whose active set has not settled
    prev: torch.Tensor | None = None
    for _ in range(iters):
        Gg, bg, xg = G[going], b[going], x[going]
        u = xg + bg - torch.einsum("bij,bj->bi", Gg, xg) - l2 * xg  # x + d
        act = u.abs() > l1
        if prev is not None:  # a signal whose active set repeats has settled: it leaves the loop
            moved = (act != prev).any(-1)
            if not bool(moved.any()):
                break
            going, Gg, bg, u, act = going[moved], Gg[moved], bg[moved], u[moved], act[moved]
        prev = act
        sign = torch.where(act, u.sign(), torch.zeros_like(u))
        keep = (act[:, :, None] & act[:, None, :]).to(G.dtype)
        M = Gg * keep + torch.diag_embed(torch.where(act, torch.full_like(u, l2 + 1e-10), torch.ones_like(u)))
        # M is symmetric positive definite (G is a Gram matrix; inactive atoms get a unit diagonal)
        rhs = torch.where(act, bg - l1 * sign, torch.zeros_like(bg))
        sol, info = _solve_spd(M, rhs)
        # where M is singular too (l2 = 0, dependent atoms) the signal keeps its point (and fails the check)
        sol = torch.where((info != 0)[:, None], x[going], sol)
        x[going] = sol
    grad = torch.einsum("bij,bj->bi", G, x) - b + l2 * x
    return x, _violation(grad, x, l1).amax(-1) <= kkt_tol[:, 0]


def _fista(G: torch.Tensor, b: torch.Tensor, c0: torch.Tensor, l1: float, l2: float, iters: int,
           tol: float, kkt_tol: torch.Tensor, polish_every: int = 20,
           polish_at: tuple[int, ...] = (2, 5, 10), pdas_iters: int = PDAS_ITERS) -> torch.Tensor:
    """Batched FISTA with adaptive restart on restricted problems ``1/2 c^T G c - b^T c + ...``, after
    ``pdas_iters`` primal-dual active-set steps (``_pdas``), which solve most of them exactly on their own.

    After ``polish_at`` iterations and then every ``polish_every`` the support and signs FISTA has found
    are tried in an exact solve (``_polish``); signals whose polished solution is optimal leave the batch.
    An exact solve costs about as much as a few iterations and usually succeeds early (the support is
    found long before the coefficients converge), hence the early tries.
    """
    out = c0.clone()
    todo = torch.arange(G.shape[0], device=G.device)
    if pdas_iters and G.shape[-1] > PDAS_MIN_ATOMS:
        x, done = _pdas(G, b, c0, l1, l2, kkt_tol, pdas_iters)
        if bool(done.any()):
            out[done] = x[done]
            keep = ~done
            todo, G, b, c0, kkt_tol = (v[keep] for v in (todo, G, b, c0, kkt_tol))
            if todo.numel() == 0:
                return out
    lip = _largest_eigenvalue(G) + l2  # [b]
    step = (1.0 / lip)[:, None]
    c, z, t = c0, c0.clone(), torch.ones_like(lip)[:, None]
    for it in range(1, iters + 1):
        grad = torch.einsum("bij,bj->bi", G, z) - b + l2 * z
        c_new = _soft(z - step * grad, step * l1)
        t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_new
        # restart the momentum where it points uphill (O'Donoghue & Candes 2015)
        uphill = ((z - c_new) * (c_new - c)).sum(-1, keepdim=True) > 0
        momentum = torch.where(uphill, torch.zeros_like(momentum), momentum)
        t_new = torch.where(uphill, torch.ones_like(t_new), t_new)
        z = c_new + momentum * (c_new - c)
        delta = (c_new - c).abs().max()
        c, t = c_new, t_new
        if delta <= tol:
            break
        if it % polish_every == 0 or it in polish_at:
            x, done = _polish(G, b, c, l1, l2, kkt_tol)
            if bool(done.any()):
                out[todo[done]] = x[done]
                keep = ~done
                todo, G, b, c, z, t, step, kkt_tol = (v[keep] for v in (todo, G, b, c, z, t, step, kkt_tol))
                if todo.numel() == 0:
                    return out
    out[todo] = c
    return out


def elastic_net(
    dictionary: Dictionary | Float[torch.Tensor, "d k"],
    Y: Float[torch.Tensor, "b d"],
    alpha: float = 0.05,
    l1_ratio: float = 0.95,
    tol: float = 1e-6,
    working_set: int = 8,
    max_rounds: int = 50,
    inner_iters: int = 2000,
) -> Float[torch.Tensor, "b k"]:
    """Solve the elastic net for every row of ``Y`` (defaults: the PaCE paper's t = 0.95, a = 0.05).

    Args:
        dictionary: a ``Dictionary`` (Gram precomputed) or a ``[d, k]`` atom matrix.
        Y: signals, one per row.
        tol: KKT tolerance, relative to ``max |D^T y|``; also the inner FISTA step tolerance.
        working_set: initial number of atoms per signal; doubled while the KKT check finds violators.
            Small is fast: each restricted problem stays small and well conditioned, and signals
            leave the batch as soon as their KKT check passes (8: 1.6 s for 256 signals on 10,000
            real activation atoms, against 3.8 s at 64; ``benchmarks/bench_pace_solver.py``).
        max_rounds: working-set rounds; a warning names the signals still not optimal after them.

    Returns:
        Coefficients ``C`` with ``Y ~ C @ D.T``.
    """
    if not isinstance(dictionary, Dictionary):
        dictionary = Dictionary.from_atoms(dictionary)
    D, G = dictionary.atoms, dictionary.gram
    atom_rows = dictionary.rows if dictionary.rows is not None else D.T.contiguous()
    if Y.dim() != 2 or Y.shape[1] != D.shape[0]:
        raise ValueError(f"Y must be [batch, {D.shape[0]}] to match the dictionary, got {tuple(Y.shape)}")
    if not torch.isfinite(Y).all():
        raise ValueError("Signals contain NaN or inf")
    if alpha < 0 or not 0 <= l1_ratio <= 1:
        raise ValueError("Need alpha >= 0 and 0 <= l1_ratio <= 1")
    if max_rounds < 1 or working_set < 1:
        raise ValueError(f"Need max_rounds >= 1 and working_set >= 1, got {max_rounds} and {working_set}")
    Y = Y.to(D.dtype)
    b, k = Y.shape[0], D.shape[1]
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    corr = Y @ D  # D^T y per signal, [b, k]
    scale = corr.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    C = torch.zeros_like(corr)
    m = min(working_set, k)
    score = corr.abs()
    todo = torch.arange(b, device=Y.device)  # signals whose KKT check has not passed yet
    for _ in range(max_rounds):
        rows = torch.arange(todo.numel(), device=Y.device)[:, None]
        ws: Int[torch.Tensor, "n m"] = score.topk(m, dim=-1).indices
        Gs = G[ws[:, :, None], ws[:, None, :]]  # [n, m, m]
        cs = _fista(Gs, corr[todo[:, None], ws], C[todo[:, None], ws], l1, l2, inner_iters,
                    tol * float(scale.min()) * 1e-2, 0.5 * tol * scale[todo])
        c_todo = torch.zeros((todo.numel(), k), dtype=C.dtype, device=C.device)
        c_todo[rows, ws] = cs
        C[todo] = c_todo
        # the full gradient goes through D (2 d k n flops), not the k x k Gram (k^2 n flops)
        # (the reconstruction D c uses only the working set's atoms)
        if k > D.shape[0]:
            recon = torch.nn.functional.embedding_bag(ws, atom_rows, per_sample_weights=cs, mode="sum")  # D c
            grad = recon @ D - corr[todo] + l2 * c_todo
        else:
            grad = c_todo @ G - corr[todo] + l2 * c_todo
        viol = _violation(grad, c_todo, l1)
        bad = (viol > tol * scale[todo]).sum(-1)
        again = bad > 0
        if not bool(again.any()):
            return C
        # only signals with violators are solved again; they keep their support and add at most
        # ``working_set`` of their worst violators per round (adding every violator at once blows the
        # restricted problems up to thousands of atoms on coherent dictionaries); grow the set when it
        # cannot hold both
        todo, c_todo, viol, bad = todo[again], c_todo[again], viol[again], bad[again]
        need = int(((c_todo != 0).sum(-1) + bad.clamp(max=working_set)).max())
        while m < min(need, k):
            m = min(2 * m, k)
        score = torch.where(c_todo != 0, torch.full_like(viol, float("inf")), viol)
    worst = float((viol.amax(-1) / scale[todo, 0]).max())
    warnings.warn(f"elastic_net: {todo.numel()} of {b} signals still violate the KKT conditions after "
                  f"{max_rounds} rounds (worst {worst:.1e} relative, tol {tol:.0e}); raise max_rounds or tol",
                  RuntimeWarning, stacklevel=2)
    return C


def lasso(dictionary: Dictionary | Float[torch.Tensor, "d k"], Y: Float[torch.Tensor, "b d"], alpha: float = 0.05,
          **kwargs) -> Float[torch.Tensor, "b k"]:
    """``min 1/2 ||y - D c||^2 + alpha ||c||_1`` for every row of ``Y``."""
    return elastic_net(dictionary, Y, alpha=alpha, l1_ratio=1.0, **kwargs)


def omp(dictionary: Dictionary | Float[torch.Tensor, "d k"], Y: Float[torch.Tensor, "b d"],
        n_nonzero: int = 16) -> Float[torch.Tensor, "b k"]:
    """Orthogonal matching pursuit, batched: ``n_nonzero`` greedy atoms, least squares on the support."""
    if not isinstance(dictionary, Dictionary):
        dictionary = Dictionary.from_atoms(dictionary)
    D, G = dictionary.atoms, dictionary.gram
    Y = Y.to(D.dtype)
    b, k = Y.shape[0], D.shape[1]
    n_nonzero = min(n_nonzero, k, D.shape[0])
    corr = Y @ D
    rows = torch.arange(b, device=Y.device)[:, None]
    chosen = torch.empty((b, 0), dtype=torch.long, device=Y.device)
    coef = torch.empty((b, 0), dtype=Y.dtype, device=Y.device)
    for _ in range(n_nonzero):
        resid_corr = corr.clone()
        if chosen.shape[1]:
            resid_corr -= torch.einsum("bs,bsk->bk", coef, G[chosen])
            resid_corr[rows, chosen] = 0
        chosen = torch.cat([chosen, resid_corr.abs().argmax(-1, keepdim=True)], dim=1)
        Gs = G[chosen[:, :, None], chosen[:, None, :]]
        eye = torch.eye(chosen.shape[1], dtype=Y.dtype, device=Y.device)
        coef = torch.linalg.solve(Gs + 1e-10 * eye, corr[rows, chosen][..., None])[..., 0]
    C = torch.zeros_like(corr)
    C[rows, chosen] = coef
    return C
