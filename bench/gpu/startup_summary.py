"""One line per row of startup.mjs's JSON lines (and the library's candlewick_startup rows), for a call's log.

    python3 bench/gpu/startup_summary.py FILE.jsonl
"""
import json
import sys

for line in open(sys.argv[1]):
    row = json.loads(line)
    if "rep" in row:
        if "process_to_first_image_s" in row:
            print(f"  process {row['process_to_first_image_s']:.3f} s = node {row['node_boot_s']:.3f} + import {row['import_s']:.3f}"
                  f" + load {row['load_s']:.3f} + first image {row['first_image_s']:.3f} (steady {row['steady_s']:.3f});"
                  f" image {row['first_image_sha256'][:16]}")
        else:
            print(f"  rep {row['rep']}: load {row['load_s']:.3f} + first image {row['first_image_s']:.3f}")
    else:
        s = row["candlewick_startup"]
        print("  " + s["what"] + ": " + ", ".join(f"{k} {v['s']:.3f}" + (f"/{v['calls']}" if v['calls'] > 1 else "")
                                                  for k, v in s.items() if k != "what"))
