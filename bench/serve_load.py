#!/usr/bin/env python3
"""Load test for `hyrt serve`: N concurrent A1111 clients, each sending M txt2img requests.

Starts the server (the bundled model unless --model), warms it up with one request, then
runs the clients and records per-request latency (p50/p95), images per second, the
server's resident memory after warm-up and at the end, and what /metrics counted. Python
standard library only.

  bench/serve_load.py --hyrt build/tools/hyrt --out bench/results/serve_load_2core.json
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def post(base, path, body, timeout=600):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def percentile(values, q):
    s = sorted(values)
    if not s:
        return None
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyrt", default="build/tools/hyrt")
    ap.add_argument("--model", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--extra", nargs="*", default=[], help="more `hyrt serve` flags")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    cmd = [args.hyrt, "serve", "--port", "0", "--queue", str(max(16, args.clients * 2))]
    if args.model:
        cmd += ["-m", args.model]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    cmd += args.extra
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    base = None
    log_lines = []
    for line in proc.stderr:
        log_lines.append(line)
        m = re.search(r"listening on (http://[^/]+)/", line)
        if m:
            base = m.group(1)
            break
    if not base:
        sys.exit("serve_load: the server did not start:\n" + "".join(log_lines))
    # Keep draining the request log so the server never blocks on a full pipe.
    drained = []
    threading.Thread(target=lambda: drained.extend(proc.stderr), daemon=True).start()

    body = {"prompt": "a red circle on a blue background", "steps": args.steps,
            "width": args.size, "height": args.size, "sampler_name": "Euler a", "seed": -1}
    try:
        t0 = time.time()
        post(base, "/sdapi/v1/txt2img", body)  # warm-up: prepares this shape
        warmup_s = time.time() - t0
        rss_warm = rss_bytes(proc.pid)

        latencies, failures, lock = [], [], threading.Lock()

        def client(k):
            for i in range(args.requests):
                start = time.time()
                try:
                    status, out = post(base, "/sdapi/v1/txt2img", body)
                    ok = status == 200 and len(out["images"]) == 1
                except (urllib.error.URLError, OSError, ValueError) as e:
                    ok, status = False, str(e)
                with lock:
                    (latencies if ok else failures).append(
                        time.time() - start if ok else (k, i, status))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        rss_samples = []
        while any(t.is_alive() for t in threads):
            rss_samples.append(rss_bytes(proc.pid))
            time.sleep(0.5)
        for t in threads:
            t.join()
        wall = time.time() - t0
        rss_end = rss_bytes(proc.pid)
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            metrics = r.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    def metric(name):
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", metrics, re.M)
        return float(m.group(1)) if m else None

    n = len(latencies)
    result = {
        "what": f"hyrt serve load test: {args.clients} concurrent clients x {args.requests} "
                f"txt2img requests, {args.size}x{args.size}, {args.steps} steps, Euler a, "
                "bundled shapes model" if not args.model else args.model,
        "machine": machine(),
        "command": " ".join(cmd),
        "request_batching": "none: the public API has no way to run waiting requests as one "
                            "UNet batch yet; requests run one after another",
        "requests": args.clients * args.requests,
        "answered_ok": n,
        "failed": len(failures),
        "wall_s": round(wall, 3),
        "images_per_s": round(n / wall, 3) if wall > 0 else None,
        "latency_s": {
            "p50": round(percentile(latencies, 0.50), 4) if n else None,
            "p95": round(percentile(latencies, 0.95), 4) if n else None,
            "max": round(max(latencies), 4) if n else None,
            "mean": round(statistics.mean(latencies), 4) if n else None,
        },
        "warmup_request_s": round(warmup_s, 3),
        "rss_bytes": {"after_warmup": rss_warm, "end": rss_end,
                      "max_during": max(rss_samples) if rss_samples else None},
        "server_metrics": {
            "images_generated_total": metric("hyrt_images_generated_total"),
            "queue_rejected_total": metric("hyrt_queue_rejected_total"),
            "denoise_step_seconds_mean":
                (metric("hyrt_denoise_step_seconds_sum") or 0) /
                max(1.0, metric("hyrt_denoise_step_seconds_count") or 0),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if failures:
        print("serve_load: failures:", failures[:5], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
