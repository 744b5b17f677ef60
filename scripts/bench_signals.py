"""On a GPU: frames with and without signals (bit-identical?), what signals cost a batched render,
and what one batch of CLIP embeddings costs (full-size model, random weights, 512 px, fp16).

    PYTHONPATH=/tmp/site:$PWD python3 scripts/bench_signals.py 120   # frames per row (docs/signals.md)
"""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import torch

sys.path.insert(0, ".")
import os

from pipeline.animate import HostCopy, StepBatcher, StreamingAnimator
from pipeline.animate._preprocess import clip_pixels
from pipeline.media import load_image
from pipeline.models.weights import random_models
from pipeline.worker._signals import EMBED_BATCH, SignalRecorder, clip_embedder, encoder_name

dev = torch.device(os.environ.get("DEV", "cuda"))
ARCH = os.environ.get("ARCH", "full")
R = int(os.environ.get("RES", "512"))
t = time.time()
models = random_models(ARCH, dev, torch.float16 if dev.type == "cuda" else torch.float32)
models.optimize(channels_last=dev.type == "cuda")
anim = StreamingAnimator(models, resolution=R)
print(
    "model ready",
    round(time.time() - t, 1),
    "s",
    encoder_name(models.image_encoder.config),
    flush=True,
)
photo = load_image("manifests/media/portrait_a.png")
side = min(photo.shape[:2])
portrait = np.ascontiguousarray(photo[:side, :side])
yy, xx = np.mgrid[0:R, 0:R] / R


def driving(n, seed):
    rng = np.random.default_rng(seed)
    col = rng.uniform(0, 255, 3)
    out = np.empty((n, R, R, 3), np.uint8)
    for i in range(n):
        cx, cy = 0.5 + 0.25 * np.sin(i / 5), 0.5 + 0.2 * np.cos(i / 7)
        b = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)[..., None]
        out[i] = (b * col + (1 - b) * 40).astype(np.uint8)
    return out


N = int(sys.argv[1]) if len(sys.argv) > 1 else 240
DRIVE = [driving(N, i) for i in range(4)]


def run(streams, signals, n=N):
    batcher, prep = StepBatcher(anim), ThreadPoolExecutor(1)
    embed = clip_embedder(anim, prep)
    outs, sigs = [None] * streams, [None] * streams

    def row(i):
        stream = prep.submit(anim.fuse_reference, portrait, seed=i, stream_id=str(i)).result()
        rec = (
            SignalRecorder(
                embed, stream.clip_embeds, frames=n, rate=Fraction(25), every_seconds=1.0, model="m"
            )
            if signals
            else None
        )
        batcher.register(stream)
        copies = []
        for s in range(0, n, 4):
            chunk = DRIVE[i][s : s + 4]
            f = batcher.advance(stream, chunk)
            copies.append(HostCopy(f))
            if rec:
                rec.add(chunk, f)
        while not stream.done:
            f = batcher.advance(stream, None)
            copies.append(HostCopy(f))
            if rec:
                rec.add(None, f)
        batcher.unregister(stream)
        outs[i] = np.concatenate([c.result().numpy() for c in copies])
        sigs[i] = rec.finish() if rec else None

    threads = [threading.Thread(target=row, args=(i,)) for i in range(streams)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dev.type == "cuda" and torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    totals = batcher.gpu_clock.totals() if batcher.gpu_clock else None
    batcher.close()
    prep.shutdown()
    return outs, sigs, wall, totals


run(4, True, 40)  # warm-up
res = {}
off1 = on1 = run(1, False, 8)
res["1 stream: frames equal on/off"] = all(np.array_equal(a, b) for a, b in zip(off1[0], on1[0]))
res["1 stream wall off,on"] = [round(x[2], 2) for x in (off1, on1)]
runs = [(m, run(4, m == "on")) for m in ("off", "off", "on", "on")]
res["4 streams wall"] = [(m, round(r[2], 2), r[3] and r[3]["busy_seconds"]) for m, r in runs]


def same(a, b):
    return [int(np.abs(x.astype(int) - y).max()) for x, y in zip(a[1][0], b[1][0])]


res["4 streams max abs diff off/off, on/on, off/on"] = [
    same(runs[0], runs[1]),
    same(runs[2], runs[3]),
    same(runs[0], runs[2]),
]
if dev.type != "cuda":
    print(json.dumps(res, indent=1))
    sys.exit()
imgs = np.stack([portrait[:512, :512]] * EMBED_BATCH)
ins = anim.clip_inputs(imgs)
for _ in range(3):
    anim.embed_images(ins)
torch.cuda.synchronize()
s, e = torch.cuda.Event(True), torch.cuda.Event(True)
s.record()
for _ in range(20):
    anim.embed_images(ins)
e.record()
e.synchronize()
res["embed_images batch of 8 ms"] = round(s.elapsed_time(e) / 20, 2)
px = torch.cat([clip_pixels(im, models.clip_image_size) for im in imgs]).to(dev, models.dtype)
s.record()
for _ in range(20):
    models.image_encoder(px)
e.record()
e.synchronize()
res["image encoder alone, batch 8, ms"] = round(s.elapsed_time(e) / 20, 2)
t0 = time.perf_counter()
[clip_pixels(im, models.clip_image_size) for im in imgs]
res["clip_pixels 8 images CPU ms"] = round((time.perf_counter() - t0) * 1e3, 1)
print(json.dumps(res, indent=1))
