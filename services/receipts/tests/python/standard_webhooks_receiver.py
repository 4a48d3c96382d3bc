"""A webhook receiver that verifies Standard Webhooks signatures with the `standardwebhooks`
library, as a subscriber's would.

Usage: standard_webhooks_receiver.py SECRETS_FILE

SECRETS_FILE holds a JSON object, name -> "whsec_..." secret, re-read on every request, so the
test can tell the receiver about secrets as they are made. Each request is checked against every
secret; the receiver answers 204 when at least one verifies and 401 otherwise, and prints one JSON
line per request: {"receipt": ..., "verified": [names], "rejected": [names]}. The first line it
prints is {"listening": port}.
"""

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRETS_FILE = sys.argv[1]


def emit(line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with open(SECRETS_FILE, encoding="utf-8") as f:
            secrets = json.load(f)
        verified, rejected = [], []
        for name, secret in sorted(secrets.items()):
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
                verified.append(name)
            except WebhookVerificationError:
                rejected.append(name)
        form = urllib.parse.parse_qs(body.decode("utf-8"))
        emit({
            "receipt": form.get("DeliveryReceiptSid", [""])[0],
            "verified": verified,
            "rejected": rejected,
        })
        self.send_response(204 if verified else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
emit({"listening": server.server_address[1]})
server.serve_forever()
