"""A simulated upstream (OpenAI, Anthropic, Azure OpenAI), served over real HTTP by its own process.

Tests, demos and benchmarks point the gateway at it because no provider is reachable here.
It answers chat, completions, embeddings, the Responses API and the model list, Anthropic's
Messages API (and count_tokens) and Azure OpenAI's deployment and v1 URLs, with deterministic
content and usage, paces replies by a per-model latency profile (the teacher slower than the
student), and injects faults (429, 500, 503, 529, timeouts, dropped streams, error events) on
request. It imports nothing else of the project.

    from simulator.server import run      # run("127.0.0.1", 8001, None)
    from simulator.app import create_app  # create_app(profile) -> web.Application
    python -m simulator --port 8001 --profile examples/simulator-profile.yaml

Modules: profile (latency and faults config), tokens (the token rule), content (the replies),
wire (OpenAI shapes and errors), exchange (what every request goes through: recording,
latency, faults), streaming (paced SSE), chat, completions, embeddings, responses (the
endpoints), anthropic_wire, anthropic_checks, anthropic_request and anthropic (Anthropic's
errors, its checks of one value or content block, its request checks and token counts, its
endpoints), azure (Azure's URLs and headers over the OpenAI endpoints), recorder (the request
ring buffer), app (routes), server (the process).
fireworks, fireworks_request, fireworks_datasets, fireworks_jobs and fireworks_state: Fireworks
AI's fine-tuning API under /v1/accounts/ (datasets, supervised and DPO jobs, models) and its
/inference/v1 path, as Fireworks' own SDK sends and reads them.
together, together_jobs, together_job_state, together_store, together_data and together_models:
Together AI's files, fine-tuning and serving API under /together/v1, as Together's own SDK sends
and reads it.
"""
