#!/usr/bin/env python3
"""Score hyrt's bundled shapes model: generate with `hyrt generate` on the CPU, judge each
image with `hyrt check-shapes`, report colour / shape / count / background accuracy.

Prompts come from train/shapes_data.py with data seeds far from the training set's
(training draws images from random.Random(1_000_000 + i), i < 300_000; this script uses
90_000_000 + i for the test set and 80_000_000 + i for --sweep's tuning set), and the noise
seeds passed to hyrt (7000 + i, 8000 + i for held-out, 6000 + i for the sweep) are unrelated
to training's torch RNG. Two prompt sets:
  test      --count N prompts (default 60) drawn like training captions, held-out colour x
            shape pairs excluded;
  held-out  --holdout-per-pair prompts (default 6) for each held-out pair (never trained on).

Every model given with --model NAME=PATH is run on every prompt/seed pair (same flags);
verdicts of the first model are compared with each other model's, pair by pair
(agreement = identical count, colour, shape and background; also per attribute).

  python3 train/evaluate.py --model f32=models/shapes --model int8=models/shapes-int8.safetensors
      [--cfg 5 --steps 20 --sampler ddim] [--json bench/results/shapes_eval.json]
      [--sheet bench/results/shapes_contact_sheet.png]
  python3 train/evaluate.py --sweep --model f32=models/shapes   # pick sampler / cfg / steps

Needs numpy and Pillow (train/shapes_data.py draws with them; Pillow also makes the sheet).
"""

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

TEST_DATA_SEED = 90_000_000
SWEEP_DATA_SEED = 80_000_000
HOLDOUT = ["purple triangle", "orange circle", "cyan square"]
ATTRS = ("colour", "shape", "count", "background")

VERDICT_RE = re.compile(r"^(?P<path>.*): (?P<count>\d+) (?P<colour>\S+) (?P<shape>\S+) on "
                        r"(?P<bg>\S+) \(confidence (?P<conf>[-\d.]+)")


def load_shapes_data():
    import shapes_data  # needs numpy + Pillow only for drawing; sample() captions use them
    return shapes_data


def test_prompts(count, data_seed, holdout):
    sd = load_shapes_data()
    return [sd.sample(random.Random(data_seed + i), 64, holdout)[1] for i in range(count)]


def holdout_prompts(per_pair):
    sd = load_shapes_data()
    out = []
    for k, pair in enumerate(HOLDOUT):
        colour, shape = pair.split(" ")
        for i in range(per_pair):
            rng = random.Random(TEST_DATA_SEED + 500_000 + 1000 * k + i)
            out.append(sd.sample(rng, 64, (), shape=shape, colour=colour, count=1 + i % 3)[1])
    return out


def run_generate(hyrt, model, prompt, seed, out, flags, threads):
    model, _, extra = model.partition("|")
    cmd = [hyrt, "generate", "-m", model, "-p", prompt, "-s", str(seed), "-o", out,
           "-W", "64", "-H", "64", "--steps", str(flags["steps"]),
           "--cfg-scale", str(flags["cfg"]), "--sampler", flags["sampler"]]
    cmd += extra.split()
    if threads:
        cmd += ["-t", str(threads)]
    # Idle OpenMP threads must sleep, not spin: on a shared 2-core machine (and under `nice`)
    # spinning barriers make a generate 10x slower (scripts/test.sh sets the same).
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    m = re.search(r"sampling (\d+) ms.*total (\d+) ms", r.stdout + r.stderr)
    return {"wall_s": round(wall, 3), "sampling_ms": int(m.group(1)) if m else None,
            "total_ms": int(m.group(2)) if m else None}


def run_check(hyrt, image, prompt):
    r = subprocess.run([hyrt, "check-shapes", image, "--expect", prompt], capture_output=True,
                       text=True, cwd=ROOT)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith(image + ":")), "")
    m = VERDICT_RE.match(line)
    if not m:
        raise RuntimeError(f"cannot read check-shapes output for {image}:\n{r.stdout}{r.stderr}")
    bad = line.split("MISMATCH:")[1].split() if "MISMATCH:" in line else []
    return {
        "verdict": {"count": int(m.group("count")), "colour": m.group("colour"),
                    "shape": m.group("shape"), "background": m.group("bg"),
                    "confidence": float(m.group("conf"))},
        "correct": {a: a not in bad for a in ATTRS},
    }


def score(rows):
    n = len(rows)
    acc = {a: sum(r["correct"][a] for r in rows) / n for a in ATTRS} if n else {}
    acc["all"] = sum(all(r["correct"].values()) for r in rows) / n if n else 0
    return {k: round(v, 4) for k, v in acc.items()} | {"n": n}


def agreement(rows_a, rows_b):
    n = len(rows_a)
    key = lambda r: tuple(r["verdict"][a] for a in ATTRS)  # noqa: E731
    out = {"verdict": sum(key(a) == key(b) for a, b in zip(rows_a, rows_b)) / n}
    for a in ATTRS:
        out[f"{a}_correctness"] = sum(x["correct"][a] == y["correct"][a]
                                      for x, y in zip(rows_a, rows_b)) / n
    return {k: round(v, 4) for k, v in out.items()} | {"n": n}


def model_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def evaluate(models, pairs, flags, hyrt, img_dir, threads, log=print):
    """pairs: [(set, prompt, seed)]; returns {model: [row]}"""
    results = {}
    for name, path in models:
        rows = []
        for i, (kind, prompt, seed) in enumerate(pairs):
            out = os.path.join(img_dir, f"{name}_{kind}_{i:03d}.png")
            t = run_generate(hyrt, path, prompt, seed, out, flags, threads)
            c = run_check(hyrt, out, prompt)
            rows.append({"set": kind, "prompt": prompt, "seed": seed, "image": out, **t, **c})
        results[name] = rows
        log(f"  {name}: " + json.dumps(score([r for r in rows if r["set"] == "test"])))
    return results


def contact_sheet(results, models, path, cols=10):
    from PIL import Image, ImageDraw, ImageFont
    cell, text_h = 128, 58
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        font = ImageFont.load_default()
    blocks = []
    for name, _ in models:
        rows = results[name]
        nrows = (len(rows) + cols - 1) // cols
        sheet = Image.new("RGB", (cols * cell, 24 + nrows * (cell + text_h)), "white")
        d = ImageDraw.Draw(sheet)
        s = score([r for r in rows if r["set"] == "test"])
        h = score([r for r in rows if r["set"] == "holdout"])
        d.text((4, 4), f"model {name}: test colour {s['colour']:.0%} shape {s['shape']:.0%} "
               f"count {s['count']:.0%} (n={s['n']}); held-out (last rows) colour "
               f"{h.get('colour', 0):.0%} shape {h.get('shape', 0):.0%} count "
               f"{h.get('count', 0):.0%} (n={h['n']}). Red text: checker mismatch.",
               fill="black", font=font)
        for i, r in enumerate(rows):
            x, y = (i % cols) * cell, 24 + (i // cols) * (cell + text_h)
            img = Image.open(r["image"]).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(img, (x, y))
            ok = all(r["correct"].values())
            words, lines, cur = r["prompt"].split(), [], ""
            for w in words:
                if len(cur) + len(w) + 1 > 21:
                    lines.append(cur)
                    cur = w
                else:
                    cur = (cur + " " + w).strip()
            lines.append(cur)
            v = r["verdict"]
            lines.append(f"-> {v['count']} {v['colour']} {v['shape']}/{v['background']}"[:22])
            for k, ln in enumerate(lines[:5]):
                d.text((x + 2, y + cell + 1 + 11 * k), ln, font=font,
                       fill=(0, 0, 0) if ok or k < len(lines) - 1 else (200, 0, 0))
            if not ok:
                d.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(220, 0, 0), width=2)
        blocks.append(sheet)
    w = max(b.width for b in blocks)
    out = Image.new("RGB", (w, sum(b.height for b in blocks) + 8 * len(blocks)), "white")
    y = 0
    for b in blocks:
        out.paste(b, (0, y))
        y += b.height + 8
    out.save(path, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hyrt", default=os.path.join(ROOT, "build", "tools", "hyrt"))
    ap.add_argument("--model", action="append", required=True,
                    help='NAME=PATH or NAME=PATH|EXTRA FLAGS, e.g. '
                    '"int8-w8=models/shapes-int8.safetensors|--int8-mode w8"')
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--holdout-per-pair", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--img-dir", default="/tmp/hyrt_shapes_eval")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "shapes_eval.json"))
    ap.add_argument("--sheet",
                    default=os.path.join(ROOT, "bench", "results", "shapes_contact_sheet.png"))
    ap.add_argument("--sweep", action="store_true",
                    help="score sampler x cfg x steps on a tuning set (not the test set)")
    ap.add_argument("--sweep-count", type=int, default=24)
    ap.add_argument("--sweep-json", default="", help="also write the sweep's table here")
    ap.add_argument("--sheet-models", default="",
                    help="comma-separated model names on the contact sheet (default: all)")
    ap.add_argument("--sweep-grid", default="ddim:20:3,ddim:20:5,ddim:20:7.5,euler_a:20:3,"
                    "euler_a:20:5,euler_a:20:7.5,dpmpp_2m:20:5,euler:20:5,ddim:10:5,ddim:30:5")
    args = ap.parse_args(argv)
    models = [tuple(m.split("=", 1)) for m in args.model]
    os.makedirs(args.img_dir, exist_ok=True)

    if args.sweep:
        prompts = test_prompts(args.sweep_count, SWEEP_DATA_SEED, HOLDOUT)
        pairs = [("test", p, 6000 + i) for i, p in enumerate(prompts)]
        table = []
        for spec in args.sweep_grid.split(","):
            sampler, steps, cfg = spec.split(":")
            flags = {"sampler": sampler, "steps": int(steps), "cfg": float(cfg)}
            print(f"sweep {flags}", flush=True)
            res = evaluate(models[:1], pairs, flags, args.hyrt, args.img_dir, args.threads,
                           log=lambda s: print(s, flush=True))
            rows = res[models[0][0]]
            table.append({**flags, **score(rows),
                          "mean_wall_s": round(sum(r["wall_s"] for r in rows) / len(rows), 3)})
        print(json.dumps(table, indent=1))
        if args.sweep_json:
            with open(args.sweep_json, "w") as f:
                json.dump({"model": models[0][1], "tuning_set": f"{args.sweep_count} prompts "
                           f"from random.Random({SWEEP_DATA_SEED}+i), hyrt seeds 6000+i",
                           "table": table}, f, indent=1)
        return 0

    flags = {"sampler": args.sampler, "steps": args.steps, "cfg": args.cfg}
    pairs = [("test", p, 7000 + i) for i, p in enumerate(test_prompts(args.count, TEST_DATA_SEED,
                                                                        HOLDOUT))]
    pairs += [("holdout", p, 8000 + i)
              for i, p in enumerate(holdout_prompts(args.holdout_per_pair))]
    print(f"{len(pairs)} prompt/seed pairs x {len(models)} model(s), flags {flags}", flush=True)
    results = evaluate(models, pairs, flags, args.hyrt, args.img_dir, args.threads,
                       log=lambda s: print(s, flush=True))

    summary = {}
    for name, path in models:
        rows = results[name]
        walls = sorted(r["wall_s"] for r in rows)
        summary[name] = {
            "model": path,
            "size_bytes": model_bytes(path.partition("|")[0]),
            "test": score([r for r in rows if r["set"] == "test"]),
            "holdout": score([r for r in rows if r["set"] == "holdout"]),
            "holdout_by_pair": {h: score([r for r in rows if r["set"] == "holdout" and
                                          all(w in r["prompt"] for w in h.split())])
                                for h in HOLDOUT},
            "generate_wall_s": {"median": walls[len(walls) // 2], "max": walls[-1],
                                "mean": round(sum(walls) / len(walls), 3)},
        }
    agree = {}
    a = models[0][0]
    for b, _ in models[1:]:
        agree[f"{a} vs {b}"] = {
            "all_pairs": agreement(results[a], results[b]),
            "test": agreement([r for r in results[a] if r["set"] == "test"],
                              [r for r in results[b] if r["set"] == "test"])}
    report = {
        "what": "hyrt bundled shapes model: hyrt generate (CPU) judged by hyrt check-shapes",
        "flags": flags | {"width": 64, "height": 64},
        "test_set": f"{args.count} prompts from shapes_data.sample(random.Random("
                    f"{TEST_DATA_SEED}+i)), held-out pairs excluded; hyrt seeds 7000+i",
        "holdout_set": f"{args.holdout_per_pair} prompts for each of {HOLDOUT} (never in training);"
                       f" hyrt seeds 8000+i",
        "targets": {"colour": 0.9, "shape": 0.8, "count": 0.7, "f32_int8_agreement": 0.95},
        "summary": summary,
        "agreement": agree,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads_flag": args.threads or "default (all cores)"},
        "date": time.strftime("%Y-%m-%d"),
        "images": {name: [{k: r[k] for k in ("set", "prompt", "seed", "verdict", "correct",
                                              "wall_s")} for r in results[name]]
                   for name, _ in models},
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({"summary": summary, "agreement": agree}, indent=1))
    try:
        shown = [m for m in models if not args.sheet_models or
                 m[0] in args.sheet_models.split(",")]
        contact_sheet(results, shown, args.sheet)
        print("wrote", args.json, "and", args.sheet)
    except ImportError:
        print("wrote", args.json, "(no Pillow: no contact sheet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
