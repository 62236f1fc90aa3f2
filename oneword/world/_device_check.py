import sys, time, torch
from oneword.world.render import render_batch, sample_specs
from oneword.world import oracle as O

dev = "cuda"
torch.backends.cudnn.benchmark = True
g = torch.Generator(device=dev).manual_seed(0)
for B in (1024, 4096):
    specs = sample_specs(B, g)
    render_batch(specs, g, dev); torch.cuda.synchronize()
    t = time.time()
    for _ in range(3):
        render_batch(specs, g, dev)
    torch.cuda.synchronize()
    print(f"render B={B}: {3 * B / (time.time() - t):.0f} img/s", flush=True)
t = time.time(); sample_specs(4096, g); print(f"sample_specs 4096: {time.time() - t:.3f}s")
bs = int(sys.argv[2])
t = time.time(); O.train_oracle(30, bs, torch.Generator(device=dev).manual_seed(1), dev, log_every=0)
torch.cuda.synchronize(); per = (time.time() - t) / 30
steps = int(min(12000, float(sys.argv[1]) / per) // 100 * 100)
print(f"{per * 1000:.0f} ms/step at bs {bs} -> steps {steps}", flush=True)
import os
out = os.environ["OUT"] + "/oracle.safetensors"
O.main(["train", "--out", out, "--seed", "0", "--steps", str(steps), "--batch-size", str(bs),
        "--device", dev, "--n", "4096"])
