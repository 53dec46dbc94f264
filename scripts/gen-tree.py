#!/usr/bin/env python3
"""Generates a tree of rendered-looking Kubernetes YAML for benchmarks.

usage: gen-tree.py DIR TOTAL_MB [OBJECTS_PER_FILE]
Deterministic (seeded), varied enough that gzip does not collapse it.
"""
import os
import random
import sys

out, total_mb = sys.argv[1], float(sys.argv[2])
per_file = int(sys.argv[3]) if len(sys.argv) > 3 else 20
rng = random.Random(42)
words = [f"{w}{i}" for i, w in enumerate("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split() * 40)]

def deployment(ns, name):
    env = "\n".join(
        f"            - name: {rng.choice(words).upper()}_{i}\n              value: \"{rng.randrange(10**12):x}-{rng.choice(words)}\""
        for i in range(rng.randrange(8, 30))
    )
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/part-of: {rng.choice(words)}
  annotations:
    checksum/config: "{rng.getrandbits(256):064x}"
spec:
  replicas: {rng.randrange(1, 9)}
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
    spec:
      containers:
        - name: {name}
          image: registry.example.com/{ns}/{name}:1.{rng.randrange(99)}.{rng.randrange(99)}@sha256:{rng.getrandbits(256):064x}
          resources:
            requests: {{cpu: {rng.randrange(10, 999)}m, memory: {rng.randrange(16, 4096)}Mi}}
          env:
{env}
"""

target = int(total_mb * 1024 * 1024)
written = 0
n = 0
while written < target:
    ns = f"team-{n % 37}"
    d = os.path.join(out, ns, f"svc-{n // 37 % 50}")
    os.makedirs(d, exist_ok=True)
    docs = [deployment(ns, f"app-{n}-{i}") for i in range(per_file)]
    text = "---\n".join(docs)
    with open(os.path.join(d, f"manifests-{n}.yaml"), "w") as f:
        f.write(text)
    written += len(text)
    n += 1
print(f"{n} files, {n * per_file} objects, {written / 1e6:.1f} MB in {out}", file=sys.stderr)
