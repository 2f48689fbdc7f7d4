"""Reference values for aha-grpo's loss and optimizer tests, computed with PyTorch.

Run from the repository root (torch is in the project's virtualenv):

    .venv/bin/python grpo/tests/make_fixtures.py

It writes grpo/tests/fixtures/loss.json and grpo/tests/fixtures/adamw.json. The Rust tests read
these files; they never run Python.

The loss follows Hugging Face TRL's GRPOTrainer `_compute_loss` (per-token clipped surrogate, k3
KL added per token, aggregation by `loss_type`), written out here independently of the Rust code,
in float64. The optimizer part runs torch.optim.AdamW (single-tensor path), torch's
clip_grad_norm_ and a LambdaLR with transformers' warm-up + cosine-with-min-lr formula on float32
parameters with given gradients, and records every parameter after every step.
"""

import json
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def trl_loss(logps, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, max_completion_length,
             sampling=None, tis_cap=None):
    """TRL's GRPOTrainer._compute_loss on one micro-batch (no gradient accumulation). With
    `sampling` (the generation server's log-probs) and `tis_cap`: TRL's vLLM importance-sampling
    correction in "token_truncate" mode, min(exp(old - sampling), cap) on each token's loss
    before the KL term."""
    old_logps = old if old is not None else logps.detach()
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss1 = coef_1 * adv.unsqueeze(1)
    per_token_loss2 = coef_2 * adv.unsqueeze(1)
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if sampling is not None:
        importance_sampling_ratio = torch.clamp(torch.exp(old_logps - sampling), max=tis_cap)
        per_token_loss = per_token_loss * importance_sampling_ratio
    per_token_kl = None
    if ref is not None:
        per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "dapo":
        num_items_in_batch = mask.sum()  # completion tokens of the whole generation batch
        loss = (per_token_loss * mask).sum() / num_items_in_batch
    else:
        raise ValueError(loss_type)

    is_low_clipped = (coef_1 < 1 - eps_low) & (adv.unsqueeze(1) < 0)
    is_high_clipped = (coef_1 > 1 + eps_high) & (adv.unsqueeze(1) > 0)
    is_region_clipped = is_low_clipped | is_high_clipped
    tokens = mask.sum()
    metrics = {
        "clip_low": ((is_low_clipped * mask).sum() / tokens).item(),
        "clip_high": ((is_high_clipped * mask).sum() / tokens).item(),
        "clip_region": ((is_region_clipped * mask).sum() / tokens).item(),
        "kl": ((per_token_kl * mask).sum() / tokens).item() if per_token_kl is not None else None,
    }
    return loss, metrics


def loss_fixture():
    g = torch.Generator().manual_seed(1234)
    b, t = 5, 7
    lengths = [7, 4, 0, 2, 6]  # one empty completion: grpo must give it 0, not NaN
    mask = torch.zeros(b, t, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    logps = -3.0 * torch.rand(b, t, generator=g, dtype=torch.float64)
    old = logps + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)
    ref = logps + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)
    # Positive and negative advantages on long completions, so both clip regions are hit; a zero
    # advantage on a short one.
    adv = torch.tensor([1.2, -0.58, 0.36, 0.0, 0.97], dtype=torch.float64)
    max_completion_length = 10

    variants = [
        # name, uses old log-probs (mu > 1), reference, beta, eps_low, eps_high
        ("mu1", False, False, 0.0, 0.2, 0.2),
        ("mu2_clip_higher", True, False, 0.0, 0.2, 0.28),
        ("mu2_beta", True, True, 0.04, 0.2, 0.28),
        ("mu1_beta", False, True, 0.1, 0.2, 0.2),
    ]
    cases = []
    for loss_type in ["grpo", "bnpo", "dr_grpo", "dapo"]:
        for name, with_old, with_ref, beta, eps_low, eps_high in variants:
            x = logps.clone().requires_grad_(True)
            loss, metrics = trl_loss(
                x,
                old if with_old else None,
                ref if with_ref else None,
                adv,
                mask,
                loss_type,
                eps_low,
                eps_high,
                beta,
                max_completion_length,
            )
            loss.backward()
            cases.append(
                {
                    "name": f"{loss_type}_{name}",
                    "loss_type": loss_type,
                    "epsilon_low": eps_low,
                    "epsilon_high": eps_high,
                    "beta": beta,
                    "with_old": with_old,
                    "with_ref": with_ref,
                    "expected_loss": loss.item(),
                    "expected_grad": x.grad.tolist(),
                    "expected_metrics": metrics,
                }
            )
    # Truncated importance sampling: the sampler's log-probs differ from the trainer's old ones by
    # up to about 1, so that some weights reach the cap. (Drawn after everything above, which
    # stays as it was.)
    sampling = logps + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    tis_cases = []
    for loss_type, name, with_old, with_ref, beta, cap in [
        ("dapo", "mu1", False, False, 0.0, 2.0),
        ("grpo", "mu2_beta", True, True, 0.04, 1.5),
        ("dr_grpo", "mu1_beta", False, True, 0.1, 3.0),
    ]:
        x = logps.clone().requires_grad_(True)
        behaviour = sampling if not with_old else old + (sampling - logps)
        loss, metrics = trl_loss(
            x,
            old if with_old else None,
            ref if with_ref else None,
            adv,
            mask,
            loss_type,
            0.2,
            0.28,
            beta,
            max_completion_length,
            sampling=behaviour,
            tis_cap=cap,
        )
        loss.backward()
        tis_cases.append(
            {
                "name": f"{loss_type}_{name}_tis",
                "loss_type": loss_type,
                "epsilon_low": 0.2,
                "epsilon_high": 0.28,
                "beta": beta,
                "tis_cap": cap,
                "with_old": with_old,
                "with_ref": with_ref,
                "behaviour_logprobs": behaviour.tolist(),
                "expected_loss": loss.item(),
                "expected_grad": x.grad.tolist(),
            }
        )
    return {
        "max_completion_length": max_completion_length,
        "logprobs": logps.tolist(),
        "old_logprobs": old.tolist(),
        "ref_logprobs": ref.tolist(),
        "advantages": adv.tolist(),
        "mask": mask.tolist(),
        "cases": cases,
        "tis_cases": tis_cases,
    }


def lr_lambda(warmup, total, kind, min_ratio):
    """transformers' get_constant_schedule_with_warmup / get_cosine_with_min_lr_schedule_with_warmup."""

    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return factor * (1 - min_ratio) + min_ratio

    return f


def adamw_case(name, seed, lr, betas, eps, weight_decay, max_grad_norm, warmup, kind, min_ratio, steps):
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": [6, 5],
        "model.layers.0.mlp.up_proj.bias": [4],
        "model.layers.0.mlp.up_proj.weight": [4, 5],
        "model.norm.weight": [5],
    }
    names = sorted(shapes)
    params = {n: torch.randn(shapes[n], generator=g).requires_grad_(True) for n in names}
    initial = {n: params[n].detach().clone().tolist() for n in names}
    decay = [params[n] for n in names if not (n.endswith("bias") or n.rsplit(".", 2)[-2].endswith("norm"))]
    no_decay = [params[n] for n in names if n.endswith("bias") or n.rsplit(".", 2)[-2].endswith("norm")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=betas,
        eps=eps,
        foreach=False,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, steps, kind, min_ratio))
    records = []
    for step in range(steps):
        # Gradients of very different sizes so that clipping sometimes bites and sometimes not.
        scale = [0.05, 3.0, 0.5, 10.0, 0.01, 1.0][step % 6]
        grads = {n: scale * torch.randn(shapes[n], generator=g) for n in names}
        for n in names:
            params[n].grad = grads[n].clone()
        used_lr = opt.param_groups[0]["lr"]
        if max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_([params[n] for n in names], max_grad_norm, foreach=False).item()
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[n]) for n in names])).item()
        opt.step()
        sched.step()
        records.append(
            {
                "grads": {n: grads[n].tolist() for n in names},
                "lr": used_lr,
                "grad_norm": norm,
                "params_after": {n: params[n].detach().tolist() for n in names},
            }
        )
    return {
        "name": name,
        "lr": lr,
        "betas": list(betas),
        "eps": eps,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "warmup_steps": warmup,
        "schedule": kind,
        "min_lr_ratio": min_ratio,
        "total_steps": steps,
        "initial": initial,
        "shapes": shapes,
        "steps": records,
    }


def main():
    torch.set_num_threads(1)
    out = os.path.join(HERE, "fixtures")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "loss.json"), "w") as f:
        json.dump(loss_fixture(), f)
        f.write("\n")
    adamw = {
        "torch_version": torch.__version__,
        "cases": [
            adamw_case("cosine_clip", 7, 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0, 2, "cosine", 0.1, 6),
            adamw_case("constant_noclip", 8, 3e-3, (0.9, 0.999), 1e-6, 0.01, 0.0, 0, "constant", 0.0, 5),
        ],
    }
    with open(os.path.join(out, "adamw.json"), "w") as f:
        json.dump(adamw, f)
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
