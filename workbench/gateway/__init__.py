"""The HTTP gateway: devices send readings over HTTP, the gateway puts them on the raw topic.

It never writes the database: like every other source (simulator, replay) it produces
Avro readings to Kafka, and the processor does the rest. A request is answered 202 only
once the broker acknowledged every reading in it, so a reading a client was told about is
never lost.

- :mod:`~workbench.gateway.ingest`: request bodies (JSON or Avro) to validated messages
- :mod:`~workbench.gateway.keys`: API keys, stored hashed, with optional machine allow-lists
- :mod:`~workbench.gateway.ratelimit`: a token bucket per key
- :mod:`~workbench.gateway.publisher`: produce a request's readings and await their acks
- :mod:`~workbench.gateway.app`: the FastAPI application; :mod:`~workbench.gateway.server`
  runs it on uvicorn
- :mod:`~workbench.gateway.client`: a sender that posts a simulation through a gateway
"""
