from __future__ import annotations

from gateway.usage import Usage, usage_from_body, usage_from_chunks


def test_chat_body() -> None:
    body = (
        b'{"id":"c","choices":[{"message":{"content":"say \\"usage\\": {}"}}],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,'
        b'"prompt_tokens_details":{"cached_tokens":4}}}'
    )
    assert usage_from_body(body) == Usage(12, 5, 4)


def test_responses_api_and_embeddings() -> None:
    responses = (
        b'{"output":[],"usage":{"input_tokens":7,"output_tokens":3,'
        b'"input_tokens_details":{"cached_tokens":0}},"user":null}'
    )
    assert usage_from_body(responses) == Usage(7, 3, 0)
    embeddings = b'{"data":[],"usage":{"prompt_tokens":2,"total_tokens":2}}'
    assert usage_from_body(embeddings) == Usage(2, 0, 0)


def test_missing_or_null_usage() -> None:
    assert usage_from_body(b'{"usage":null}') is None
    assert usage_from_body(b"{}") is None
    assert usage_from_body(b'{"usage": "nonsense"}') is None


def test_stream_usage_chunk_split_anywhere() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    for size in (1, 5, 40, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert usage_from_chunks(chunks) == Usage(9, 1, 0)
    assert usage_from_chunks([b'data: {"usage":null}\n\n', b"data: [DONE]\n\n"]) is None
