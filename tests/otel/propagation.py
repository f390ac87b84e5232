#!/usr/bin/env python3
"""A service instrumented with the OpenTelemetry Python SDK and its default propagators
(W3C trace context and baggage), for the e2e test `tests/it/otel_propagation.rs`, which
calls it from a Rust service instrumented with observatory-instrument.

GET /hop?next=URL: extracts the context from the request, starts a SERVER span in it
and, if `next` is given, calls it inside a CLIENT span with the context injected. The
answer is JSON: the trace id and remote parent span id the SDK saw, the baggage entries
it read, and the body `next` answered. The server prints {"port": N} once listening, and
serves until stdin closes.
"""

import json
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("python-shop")


class Hop(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        carrier = {k.lower(): v for k, v in self.headers.items()}
        context = propagate.extract(carrier)
        parent = trace.get_current_span(context).get_span_context()
        answer = {
            "remote_trace_id": format(parent.trace_id, "032x") if parent.is_valid else None,
            "remote_parent_id": format(parent.span_id, "016x") if parent.is_valid else None,
            "baggage": dict(baggage.get_all(context)),
        }
        # As OpenTelemetry's server instrumentations do: the extracted context (trace and
        # baggage) becomes the current one while the request is served.
        token = otel_context.attach(context)
        try:
            self.serve(query, answer)
        finally:
            otel_context.detach(token)

    def serve(self, query, answer):
        with tracer.start_as_current_span("hop", kind=trace.SpanKind.SERVER) as span:
            answer["trace_id"] = format(span.get_span_context().trace_id, "032x")
            if "next" in query:
                with tracer.start_as_current_span("call", kind=trace.SpanKind.CLIENT):
                    headers = {}
                    propagate.inject(headers)
                    request = urllib.request.Request(query["next"][0], headers=headers)
                    with urllib.request.urlopen(request, timeout=10) as response:
                        answer["next"] = json.loads(response.read())
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = ThreadingHTTPServer(("127.0.0.1", 0), Hop)
print(json.dumps({"port": server.server_address[1]}), flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
