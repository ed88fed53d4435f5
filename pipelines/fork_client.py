"""The worker command the local runner starts (`python -I -S fork_client.py SOCKET`): it asks the warm worker
server (warm_workers.py) for an SDK-harness worker with this process's environment, waits for it, and exits
with its exit code.  Standard library only, so it starts in milliseconds; killed, its worker dies with it."""
import json
import os
import socket
import sys


def main(path: str) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    conn.sendall(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:   # the server went away: its workers did too
            return 1
        answer += chunk
    return int(answer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
