#!/usr/bin/env python3
"""A small shop instrumented with the OpenTelemetry Python SDK, exporting its spans to
Observatory peers with the SDK's own exporters. Run by the e2e test `tests/it/otel.rs`,
which knows the graph this must give.

Every request goes the same way, with the context passed in process:

    frontend    SERVER (root)                   OTLP/HTTP  -> --frontend-otlp
      CLIENT -> checkout SERVER                 Zipkin v2  -> --checkout-zipkin
        CLIENT -> payments SERVER               OTLP/HTTP, gzip -> --payments-otlp
        PRODUCER "orders" -> shipping CONSUMER  OTLP/gRPC, gzip -> --shipping-otlp-grpc
        CLIENT db.system=postgresql db.name=orders-db      (checkout's, so Zipkin)

Payments fails (status ERROR on its SERVER span) on every `--fail-every`-th request, the
database query (status ERROR on checkout's CLIENT span, which the Zipkin exporter turns
into an `error` tag) on every `--db-fail-every`-th. Each caller span encloses its
callee's in time, as a real call would. Each service has a TracerProvider of its own, as
separate processes would, and the script ends by flushing and shutting them all down,
failing if an exporter reports that an export failed.
"""

import argparse
import sys
import time

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode


class Checked(SpanExporter):
    """Wraps an exporter and remembers whether any export failed, since the SDK's span
    processors only log that."""

    def __init__(self, name, inner):
        self.name = name
        self.inner = inner
        self.failures = 0
        self.spans = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.spans += len(spans)
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def provider(service, exporter):
    """A TracerProvider for one service, with a batching processor."""
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # A queue that holds every span of a run, so none is dropped before the final flush.
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, schedule_delay_millis=500))
    return tracer_provider


def pause():
    """A little time inside a span, so that enclosing spans are strictly longer."""
    time.sleep(0.0005)


def one_request(tracers, number, args):
    frontend, checkout, payments, shipping = tracers
    payments_fails = number % args.fail_every == 0
    db_fails = number % args.db_fail_every == 0
    with frontend.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        with frontend.start_as_current_span("POST checkout", kind=SpanKind.CLIENT) as call_checkout:
            pause()
            # Another service's tracer: the parent is passed explicitly, as a propagator
            # would carry it across the wire.
            context = trace.set_span_in_context(call_checkout)
            with checkout.start_as_current_span("POST /checkout", context=context, kind=SpanKind.SERVER):
                with checkout.start_as_current_span("POST payments", kind=SpanKind.CLIENT) as call_payments:
                    pause()
                    context = trace.set_span_in_context(call_payments)
                    with payments.start_as_current_span(
                        "POST /charge", context=context, kind=SpanKind.SERVER
                    ) as charge:
                        pause()
                        if payments_fails:
                            charge.set_status(Status(StatusCode.ERROR, "card declined"))
                    pause()
                with checkout.start_as_current_span("INSERT orders", kind=SpanKind.CLIENT) as query:
                    query.set_attribute("db.system", "postgresql")
                    query.set_attribute("db.name", "orders-db")
                    pause()
                    if db_fails:
                        query.set_status(Status(StatusCode.ERROR, "deadlock detected"))
                with checkout.start_as_current_span("orders publish", kind=SpanKind.PRODUCER) as publish:
                    publish.set_attribute("messaging.system", "kafka")
                    publish.set_attribute("messaging.destination.name", "orders")
                    pause()
            pause()
        # The message is consumed after it was published (a queue between them).
        context = trace.set_span_in_context(publish)
        with shipping.start_as_current_span("orders process", context=context, kind=SpanKind.CONSUMER) as consume:
            consume.set_attribute("messaging.system", "kafka")
            consume.set_attribute("messaging.destination.name", "orders")
            pause()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frontend-otlp", required=True, help="OTLP/HTTP traces URL for frontend")
    parser.add_argument("--checkout-zipkin", required=True, help="Zipkin v2 spans URL for checkout")
    parser.add_argument("--payments-otlp", required=True, help="OTLP/HTTP traces URL for payments")
    parser.add_argument("--shipping-otlp-grpc", required=True, help="OTLP/gRPC HOST:PORT for shipping")
    parser.add_argument("--requests", type=int, required=True, help="requests through the shop")
    parser.add_argument("--fail-every", type=int, required=True, help="payments fails every K-th request")
    parser.add_argument("--db-fail-every", type=int, required=True, help="the query fails every K-th request")
    args = parser.parse_args()

    exporters = {
        "frontend": Checked("frontend", OTLPSpanExporter(endpoint=args.frontend_otlp, timeout=10)),
        "checkout": Checked("checkout", ZipkinExporter(endpoint=args.checkout_zipkin, timeout=10)),
        # Gzip, as many deployments configure it.
        "payments": Checked(
            "payments", OTLPSpanExporter(endpoint=args.payments_otlp, timeout=10, compression=Compression.Gzip)
        ),
        "shipping": Checked(
            "shipping",
            GrpcSpanExporter(
                endpoint=args.shipping_otlp_grpc, insecure=True, timeout=10, compression=grpc.Compression.Gzip
            ),
        ),
    }
    providers = {service: provider(service, exporter) for service, exporter in exporters.items()}
    tracers = [providers[s].get_tracer("observatory-e2e-shop") for s in ("frontend", "checkout", "payments", "shipping")]

    for number in range(1, args.requests + 1):
        one_request(tracers, number, args)

    failed = False
    for service, tracer_provider in providers.items():
        if not tracer_provider.force_flush(timeout_millis=20000):
            print(f"{service}: force_flush timed out", file=sys.stderr)
            failed = True
        tracer_provider.shutdown()
    for exporter in exporters.values():
        print(f"{exporter.name}: exported {exporter.spans} spans, {exporter.failures} failed exports", file=sys.stderr)
        failed = failed or exporter.failures > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
