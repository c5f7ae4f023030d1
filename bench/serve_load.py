#!/usr/bin/env python3
"""Load test for `hyrt serve`: N concurrent A1111 clients, each sending M txt2img requests.

For each --max-batch value (one server each, everything else the same): starts the server
(the bundled model unless --model), warms it up with one request, then runs the clients and
records per-request latency (p50/p95), images per second, the server's resident memory after
warm-up and at the end, the load average, and what /metrics counted (batches run, largest
batch). All runs go into one JSON file. Python standard library only.

  bench/serve_load.py --hyrt build/tools/hyrt --max-batch 1 8 \\
      --out bench/results/serve_load_2core.json
  bench/serve_load.py --model sd15-int8.safetensors --placement device --size 512 --steps 20 \\
      --clients 4 --requests 6 --max-batch 1 4 --out serve_load_gpu.json
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


def run_once(args, max_batch):
    """One server with --max-batch `max_batch`, loaded by the clients; returns its record."""
    cmd = [args.hyrt, "serve", "--port", "0", "--queue", str(max(16, args.clients * 2)),
           "--max-batch", str(max_batch), "--batch-wait-ms", str(args.batch_wait_ms)]
    if args.model:
        cmd += ["-m", args.model]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    if args.placement:
        cmd += ["--placement", args.placement]
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
        proc.wait()
        sys.exit("serve_load: the server did not start:\n" + "".join(log_lines))
    # Keep draining the request log so the server never blocks on a full pipe.
    drained = []
    threading.Thread(target=lambda: drained.extend(proc.stderr), daemon=True).start()

    body = {"prompt": "a red circle on a blue background", "steps": args.steps,
            "width": args.size, "height": args.size, "sampler_name": args.sampler,
            "seed": -1}
    try:
        t0 = time.time()
        post(base, "/sdapi/v1/txt2img", body)  # warm-up: prepares this shape
        warmup_s = time.time() - t0
        # One concurrent round of every client (at least max_batch requests): the server's
        # connection threads and their heaps, and batches of every size the run may form, are
        # made here, not in the measured part (as a long-running server would have long before).
        for _ in range(2):
            warm = [threading.Thread(target=post, args=(base, "/sdapi/v1/txt2img", body))
                    for _ in range(max(max_batch, args.clients))]
            for t in warm:
                t.start()
            for t in warm:
                t.join()
        rss_warm = rss_bytes(proc.pid)
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            metrics_warm = r.read().decode()

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
        load_before = os.getloadavg()
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
        load_after = os.getloadavg()
        rss_end = rss_bytes(proc.pid)
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            metrics = r.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    def metric(name, text=None):
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", text or metrics, re.M)
        return float(m.group(1)) if m else None

    def delta(name):  # what the measured part added to a counter
        a, b = metric(name, metrics_warm), metric(name)
        return None if a is None or b is None else b - a

    n = len(latencies)
    batches = delta("hyrt_batches_total")
    calls = delta("hyrt_batched_calls_total")
    if failures:
        print("serve_load: failures:", failures[:5], file=sys.stderr)
    return {
        "max_batch": max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "command": " ".join(cmd),
        "request_batching": "off: jobs run one after another" if max_batch == 1 else
                            f"up to {max_batch} jobs run at once; the runtime batches those "
                            "that wait together",
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
                      "max_during": max(rss_samples) if rss_samples else None,
                      # sampled every 0.5 s: at a quarter, half and three quarters of the run
                      "at_quarters": [rss_samples[len(rss_samples) * q // 4]
                                      for q in (1, 2, 3)] if rss_samples else None},
        "load_average_1m": {"before": round(load_before[0], 2),
                            "after": round(load_after[0], 2)},
        "server_metrics": {
            "images_generated_total": metric("hyrt_images_generated_total"),
            "queue_rejected_total": metric("hyrt_queue_rejected_total"),
            "denoise_step_seconds_mean":
                (metric("hyrt_denoise_step_seconds_sum") or 0) /
                max(1.0, metric("hyrt_denoise_step_seconds_count") or 0),
            "batches_during_run": batches,
            "calls_during_run": calls,
            "mean_batch_during_run": round(calls / batches, 3) if batches else None,
            "batch_size_max": metric("hyrt_batch_size_max"),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyrt", default="build/tools/hyrt")
    ap.add_argument("--model", default=None, help="checkpoint to serve (default: bundled)")
    ap.add_argument("--placement", default=None, help="hyrt serve --placement")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sampler", default="Euler a")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[1],
                    help="one run per value, each with its own server")
    ap.add_argument("--batch-wait-ms", type=int, default=0)
    ap.add_argument("--extra", nargs="*", default=[], help="more `hyrt serve` flags")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = args.model or "bundled shapes model"
    result = {
        "what": f"hyrt serve load test: {args.clients} concurrent clients x {args.requests} "
                f"txt2img requests, {args.size}x{args.size}, {args.steps} steps, "
                f"{args.sampler}, {model}; one server per --max-batch value, everything else "
                "the same",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": " ".join([sys.argv[0]] + sys.argv[1:]),
        "runs": [run_once(args, b) for b in args.max_batch],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if any(r["failed"] for r in result["runs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
