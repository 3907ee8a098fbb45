"""A command recipe on an environment task: it serves a policy that pushes toward the pole's
lean over fairtrial's evaluation protocol (observations on stdin, actions on stdout)."""

import json
import os
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "balance"
print(json.dumps({"step": 0, "env_seed_bits": int(os.environ["FAIRTRIAL_SEED_ENV"]) % 1000}))
print(json.dumps({"evaluate": "policy"}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("done"):
        break
    if mode == "silent":
        continue  # never answers
    obs = msg["observation"]
    print("thinking...")  # other output on the way is allowed
    print(json.dumps({"action": int(obs[2] > 0)}), flush=True)  # push toward the lean
