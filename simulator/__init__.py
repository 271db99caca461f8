"""A simulated OpenAI-compatible upstream, served over real HTTP by its own process.

Tests, demos and benchmarks point the gateway at it because no provider is reachable here.
It answers chat, completions, embeddings, the Responses API and the model list with
deterministic content and usage, paces replies by a per-model latency profile (the teacher
slower than the student), and injects faults (429, 500, 503, timeouts, dropped streams) on
request. It imports nothing else of the project.

    from simulator.server import run      # run("127.0.0.1", 8001, None)
    from simulator.app import create_app  # create_app(profile) -> web.Application
    python -m simulator --port 8001 --profile examples/simulator-profile.yaml

Modules: profile (latency and faults config), tokens (the token rule), content (the replies),
wire (OpenAI shapes and errors), exchange (what every request goes through: recording,
latency, faults), streaming (paced SSE), chat, completions, embeddings, responses (the
endpoints), recorder (the request ring buffer), app (routes), server (the process).
"""
