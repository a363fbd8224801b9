"""A stdio "server" that reports the sandbox it runs in: environment, argv, process group,
rlimits; it starts a grandchild (to show the bridge kills the whole group) and then waits for
stdin to close."""
import json
import os
import resource
import subprocess
import sys

sys.stdin.readline()
grandchild = subprocess.Popen(["sleep", "300"])
print(json.dumps({
    "env": dict(os.environ),
    "argv": sys.argv[1:],
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "grandchild": grandchild.pid,
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "cpu": resource.getrlimit(resource.RLIMIT_CPU),
    "as": resource.getrlimit(resource.RLIMIT_AS),
}), flush=True)
sys.stdin.read()
