"""The model stores the model_uri tests fetch from, on loopback and ephemeral ports: an
S3-protocol server (moto's, in process) and an HTTP file server with ETags (over a folder).

Prints one JSON line `{"s3": "http://127.0.0.1:P", "http": "http://127.0.0.1:Q"}`, then takes
commands on stdin, one per line, answering `ok` or `error: ...`:

    put BUCKET KEY FILE     upload FILE as s3://BUCKET/KEY (the bucket is made when missing)
    stop-s3                 stop the S3 server (the store is down)

Exits when stdin closes (the test ended), so it never outlives the test.
"""

import hashlib
import http.server
import json
import os
import sys
import threading

import boto3
from moto.server import ThreadedMotoServer


class Files(http.server.SimpleHTTPRequestHandler):
    """Files with an ETag (the content's MD5), so a changed file is seen as changed."""

    def log_message(self, *args):
        pass

    def end_headers(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                self.send_header("ETag", '"%s"' % hashlib.md5(f.read()).hexdigest())
        super().end_headers()


def main():
    folder = sys.argv[1]
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    endpoint = "http://%s:%d" % (host, port)
    handler = lambda *a, **k: Files(*a, directory=folder, **k)  # noqa: E731
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    print(json.dumps({"s3": endpoint, "http": "http://127.0.0.1:%d" % files.server_address[1]}), flush=True)
    buckets = set()
    for line in sys.stdin:
        parts = line.split()
        try:
            if parts[0] == "put":
                bucket, key, path = parts[1:4]
                if bucket not in buckets:
                    try:
                        client.create_bucket(Bucket=bucket)
                    except client.exceptions.BucketAlreadyOwnedByYou:
                        pass
                    buckets.add(bucket)
                with open(path, "rb") as f:
                    client.put_object(Bucket=bucket, Key=key, Body=f.read())
            elif parts[0] == "stop-s3":
                s3.stop()
            else:
                raise ValueError("unknown command %r" % parts[0])
            print("ok", flush=True)
        except Exception as e:  # noqa: BLE001 - the test reads the reason
            print("error: %s" % e, flush=True)
    files.shutdown()


if __name__ == "__main__":
    main()
