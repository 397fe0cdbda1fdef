"""Print N tasks as JSON lines (one in twenty fails): ``python make_tasks.py 200 > tasks.jsonl``."""

import json
import sys

for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
    print(json.dumps({"id": f"video-{i:04d}", "content": f"transcode video {i}", "fail": i % 20 == 7}))
