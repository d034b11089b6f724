#!/usr/bin/env python3
"""Times MAE pre-training steps and Swin-UNet inference of the official VIS-MAE PyTorch code and of
vismae on the same machine, and prints the ratios (vismae images/s / official images/s).

Needs: a PyTorch install, a checkout of github.com/lzl199704/VIS-MAE (for swin_mae.py), and a
built vismae binary. Usage:

    python scripts/bench/compare_official.py --official /path/to/VIS-MAE --vismae target/release/vismae \
        [--batch 8] [--steps 5] [--threads 2] [--devices 2] [--flush-denormal]

The official step is what run_pretrain.py does per iteration: forward with mask ratio 0.75, loss
backward, AdamW(lr 1e-4, betas 0.9/0.95, wd 0.05) step, on random 224x224 inputs, float32, eager,
median of `steps` timed steps after one warm-up. vismae runs `vismae bench pretrain` with the same
batch and steps. The Swin-UNet comparison is inference (`torch.no_grad()`, eval mode) of the
official `swin_unet(num_classes=3)` on random 224x224 inputs against `vismae bench unet`.

`--flush-denormal` runs the official code with `torch.set_flush_denormal(True)` (subnormal floats
read and written as zero; PyTorch's default is off). The official shift mask (-100) makes subnormal
attention weights, which x86 CPUs compute slowly; vismae's mask is -inf (see geometry.rs), so this
flag shows the reference at its best on that point.
"""
import argparse
import re
import statistics
import subprocess
import sys
import time


def official_images_per_s(checkout, batch, steps, threads):
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, checkout)
    from swin_mae import swin_mae  # the official factory (depths 2,2,2,2, embed 96)

    model = swin_mae(mask_ratio=0.75)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.rand(batch, 3, 224, 224)
    times = []
    for step in range(steps + 1):
        t = time.perf_counter()
        loss, _, _ = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def official_unet_images_per_s(checkout, batch, steps, threads):
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, checkout)
    from swin_unet import swin_unet  # the official factory (depths 2,2,6,2, embed 96)

    model = swin_unet(num_classes=3)
    model.eval()
    x = torch.rand(batch, 3, 224, 224)
    times = []
    with torch.no_grad():
        for step in range(steps + 1):
            t = time.perf_counter()
            model(x)
            if step > 0:
                times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def vismae_images_per_s(binary, what, batch, steps, devices):
    cmd = [binary, "bench", what, "--variant", "vis-mae", "--batch", str(batch), "--steps", str(steps)]
    if what == "pretrain":
        cmd += ["--devices", str(devices)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"throughput:\s+([0-9.]+) images/s", out)
    if not m:
        raise SystemExit(f"could not read vismae's throughput from:\n{out}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True, help="checkout of lzl199704/VIS-MAE")
    ap.add_argument("--vismae", default="target/release/vismae")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    ap.add_argument("--devices", type=int, default=2, help="vismae data-parallel replicas")
    ap.add_argument("--flush-denormal", action="store_true", help="official code with torch.set_flush_denormal(True)")
    a = ap.parse_args()
    import torch

    if a.flush_denormal and not torch.set_flush_denormal(True):
        sys.exit("this CPU cannot flush subnormal floats (torch.set_flush_denormal returned False)")

    flush = ", subnormals flushed to zero" if a.flush_denormal else ""
    print(f"PyTorch {torch.__version__}, {a.threads} threads{flush}; batch {a.batch}, median of {a.steps} steps")
    official = official_images_per_s(a.official, a.batch, a.steps, a.threads)
    ours = vismae_images_per_s(a.vismae, "pretrain", a.batch, a.steps, a.devices)
    print(f"MAE training step   official {official:.2f} images/s   vismae ({a.devices} replicas) {ours:.2f} images/s   ratio {ours / official:.2f}")
    official = official_unet_images_per_s(a.official, a.batch, a.steps, a.threads)
    ours = vismae_images_per_s(a.vismae, "unet", a.batch, a.steps, a.devices)
    print(f"Swin-UNet inference official {official:.2f} images/s   vismae {ours:.2f} images/s   ratio {ours / official:.2f}")


if __name__ == "__main__":
    main()
