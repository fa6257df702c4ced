"""PaCE sparse coding speed: batched working-set elastic net vs per-token scikit-learn vs dense least squares.

Problem as in the PaCE issue: a 10,000-atom dictionary at d_model 576 and 256 token positions. Atoms and
targets are real SmolLM2 residual-stream activations (layer 15, one per token position of shipped and
shared texts, attention-sink positions left out), unit-normalised as PaCE does. The Gram matrix is
computed once per dictionary and reported apart. Run alone:

    python benchmarks/bench_pace_solver.py [--atoms 10000] [--tokens 256] [--sklearn-tokens 32]

scikit-learn is timed on ``--sklearn-tokens`` positions and its per-token time is scaled to all tokens
(set it to 256 to time them all); objective gaps compare the same positions.
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch
from sklearn.linear_model import ElasticNet

import steerlens
from steerlens.data import contrast_pairs, facts_path, truthfulqa_dev_path
from steerlens.solvers import Dictionary, elastic_net, objective

ALPHA, L1_RATIO = 0.05, 0.95  # the PaCE README's values


def token_activations(model, texts, layer, limit, chunk=256):
    """Per-token residual activations of ``texts`` (in order, empty ones skipped) until ``limit`` rows."""
    texts = [t.strip() for t in texts if t.strip()]
    found, total = [], 0
    for start in range(0, len(texts), chunk):
        acts = steerlens.collect_activations(model, texts[start:start + chunk], layers=[layer], position="all",
                                             batch_size=32, progress=False)
        rows = torch.cat(acts[f"blocks.{layer}.hook_resid_post"])
        norms = rows.norm(dim=-1)
        rows = rows[norms < 4 * norms.median()]  # leave out attention-sink positions
        found.append(rows)
        total += rows.shape[0]
        if total >= limit:
            break
    return torch.cat(found)[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--atoms", type=int, default=10000)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--sklearn-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = steerlens.load_model(verbose=False)
    with open(truthfulqa_dev_path(), newline="") as f:
        tqa = [r for r in csv.DictReader(f)]
    with open(facts_path(), newline="") as f:
        facts = [r["statement"] for r in csv.DictReader(f)]
    texts = [r["Question"] for r in tqa] + [a for r in tqa for a in r["Correct Answers"].split(";")] + \
        [a for r in tqa for a in r["Incorrect Answers"].split(";")]
    atoms = token_activations(model, texts, 15, args.atoms)
    if atoms.shape[0] < args.atoms:
        raise SystemExit(f"only {atoms.shape[0]} atom positions available")
    pos, neg = contrast_pairs("toxicity")
    targets = token_activations(model, facts + pos + neg, 15, args.tokens)
    D = (atoms / atoms.norm(dim=-1, keepdim=True)).T.contiguous()  # [d, k], unit atoms
    Y = targets / targets.norm(dim=-1, keepdim=True)
    print(f"{torch.__version__}, {torch.get_num_threads()} threads; D {tuple(D.shape)}, Y {tuple(Y.shape)}, "
          f"alpha {ALPHA}, l1_ratio {L1_RATIO}")

    t0 = time.perf_counter()
    dic = Dictionary.from_atoms(D)
    t_gram = time.perf_counter() - t0
    elastic_net(dic, Y[:8], ALPHA, L1_RATIO)  # warm-up
    t0 = time.perf_counter()
    C = elastic_net(dic, Y, ALPHA, L1_RATIO, tol=1e-4)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    C_ls = torch.linalg.lstsq(D, Y.T).solution.T  # the reference code's dense (min-norm) solve
    t_ls = time.perf_counter() - t0

    n_sk = min(args.sklearn_tokens, Y.shape[0])
    Dn = D.double().numpy()
    sk = []
    t0 = time.perf_counter()
    for y in Y[:n_sk].double().numpy():
        m = ElasticNet(alpha=ALPHA / D.shape[0], l1_ratio=L1_RATIO, fit_intercept=False, max_iter=10000)
        sk.append(m.fit(Dn, y).coef_)
    t_sk_token = (time.perf_counter() - t0) / n_sk
    C_sk = torch.from_numpy(np.stack(sk)).float()

    obj = lambda c, y: objective(D, y, c, ALPHA, L1_RATIO)  # noqa: E731
    o_ours, o_sk = obj(C[:n_sk], Y[:n_sk]), obj(C_sk, Y[:n_sk])
    gap = (o_ours - o_sk) / o_sk
    o_ls = obj(C_ls, Y)
    print(f"\nGram matrix (once per dictionary): {t_gram:.2f} s")
    print(f"{'solver':<34}{'seconds':>10}{'per token ms':>14}{'nonzeros/token':>16}{'objective':>11}")
    nnz = lambda c: float((c.abs() > 1e-8).sum(-1).float().mean())  # noqa: E731
    print(f"{'steerlens working-set elastic net':<34}{t_ours:>10.2f}{1000 * t_ours / Y.shape[0]:>14.2f}"
          f"{nnz(C):>16.1f}{float(obj(C, Y).mean()):>11.4f}")
    print(f"{'scikit-learn ElasticNet per token':<34}{t_sk_token * Y.shape[0]:>10.2f}{1000 * t_sk_token:>14.2f}"
          f"{nnz(C_sk):>16.1f}{float(o_sk.mean()):>11.4f}   (timed on {n_sk} tokens)")
    print(f"{'dense least squares (reference)':<34}{t_ls:>10.2f}{1000 * t_ls / Y.shape[0]:>14.2f}"
          f"{nnz(C_ls):>16.1f}{float(o_ls.mean()):>11.4f}")
    print(f"\nspeed-up vs scikit-learn per token: {t_sk_token * Y.shape[0] / t_ours:.0f}x; "
          f"relative objective gap (ours - sklearn) / sklearn on {n_sk} tokens: max {float(gap.max()):+.2e}, "
          f"mean {float(gap.mean()):+.2e}")


if __name__ == "__main__":
    main()
