#!/usr/bin/env python3
"""A fixed number of requests for the instruction-count benchmark (scripts/bench-instructions.sh).

    scripts/instr-client.py HOST:PORT PATH REQUESTS CONNECTIONS

POSTs the single-row iris OIP body REQUESTS times over CONNECTIONS keep-alive connections
(each sending its share one after another), and exits non-zero if any answer is not 200.
Under callgrind the server is ~50x slower than this client, so the client never limits it.
"""

import http.client
import sys
import threading

BODY = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    path, requests, connections = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    failures = []

    def send(count):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        for _ in range(count):
            conn.request("POST", path, BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                failures.append(f"{response.status} {body[:200]!r}")
        conn.close()

    shares = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=send, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"instr-client: {len(failures)} of {requests} answers were not 200, first: {failures[0]}")


if __name__ == "__main__":
    main()
