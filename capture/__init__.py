"""Recording calls: the record, the bounded async writer, the store, redaction, pricing, feedback.

Imports nothing of the project's other packages. The gateway builds a ``CallRecord`` per call on
its hot path, hands it to ``CaptureWriter.submit`` (never blocks, never raises) and returns; the
writer's background task parses, assembles, prices, redacts and stores records in batches.
"""
