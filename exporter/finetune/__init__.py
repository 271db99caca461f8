"""Fine-tuning: a pluggable backend (``backend.FineTuneBackend``), OpenAI's files and
fine_tuning API as the first one (``openai_api``, for any service that speaks it), the job
loop (``loop``: upload, create, follow, save), metrics and the loss-curve plot."""
