"""The Python steps of benchmarks/gpu_check.sh, each printing one JSON line of its figures.

    python benchmarks/gpu_check_steps.py device            # the CUDA stack (helpers.workflow.cuda_check)
    python benchmarks/gpu_check_steps.py train-step        # bf16 training steps, ViT-B-32 random init
    python benchmarks/gpu_check_steps.py collect OUT LOG.. # one gpu_check.json from the steps' lines
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path


def device(dry_run: bool) -> int:
    from helpers.workflow import cuda_check

    facts = cuda_check.probe()
    report = cuda_check.check("cuda", "bf16", facts)
    for line in report.lines + [f"problem: {p}" for p in report.problems]:
        print(f"gpu_check: {line}", file=sys.stderr)
    print(json.dumps({"device": {"torch": facts.torch_version, "cuda_build": facts.build,
                                 "driver_cuda": None if facts.driver is None else "%d.%d" % tuple(facts.driver),
                                 "devices": [{"name": d.name, "memory_gib": round(d.memory_bytes / 2**30, 1),
                                              "capability": "%d.%d" % d.capability, "bf16": d.bf16}
                                             for d in facts.devices],
                                 "problems": report.problems}}))
    return 0 if report.ok or dry_run else 1


def train_step(dry_run: bool, batch: int, steps: int) -> int:
    """A real architecture (open_clip ViT-B-32 image tower, random init, 224 px) with a 1,000-class
    head: AdamW steps under bf16 autocast; the first step (allocation, cuDNN/cuBLAS set-up) is
    reported apart from the sustained ones."""
    import open_clip
    import torch
    import torch.nn.functional as F

    dev = torch.device("cpu" if dry_run else "cuda")
    model = open_clip.create_model("ViT-B-32", pretrained=None).visual.to(dev)
    head = torch.nn.Linear(model.output_dim, 1000).to(dev)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = F.cross_entropy(head(model(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    sustained = times[1:] or times
    out = {"first_step_s": round(times[0], 3), "step_s": round(sum(sustained) / len(sustained), 4),
           "images_per_s": round(batch * len(sustained) / sum(sustained), 1), "batch": batch,
           "loss_finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
           "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None}
    print(f"gpu_check: bf16 training step, ViT-B-32 random init, batch {batch}: first {out['first_step_s']} s, "
          f"then {out['step_s']} s per step ({out['images_per_s']} img/s)", file=sys.stderr)
    print(json.dumps({"train_step": out}))
    return 0 if out["loss_finite"] else 1


def collect(out: Path, logs: list[Path]) -> int:
    """Every JSON line the steps printed, plus the extraction rates paper_scale.py printed, in one file."""
    figures: dict = {}
    for log in logs:
        if not log.exists():
            continue
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    figures.update(json.loads(line))
                except ValueError:
                    pass
        rates = re.findall(r"^\s+(\S+): bare forward ([\d.]+) img/s, engine ([\d.]+) img/s", text, re.M)
        if rates:
            figures.setdefault("extraction", {})[log.stem] = {m: {"bare_img_s": float(b), "engine_img_s": float(e)}
                                                             for m, b, e in rates}
            m = re.search(r"real-size ratio: ([\d.]+)", text)
            figures["extraction"][log.stem]["real_size_ratio"] = float(m.group(1)) if m else None
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"gpu_check: figures in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    dry = "--dry-run" in sys.argv
    argv = [a for a in sys.argv[1:] if a != "--dry-run"]
    if argv[0] == "device":
        sys.exit(device(dry))
    if argv[0] == "train-step":
        sys.exit(train_step(dry, batch=2 if dry else 128, steps=2 if dry else 12))
    if argv[0] == "collect":
        sys.exit(collect(Path(argv[1]), [Path(p) for p in argv[2:]]))
    sys.exit(f"unknown step {argv[0]!r}: device | train-step | collect")
