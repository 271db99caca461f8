-- wrk script: POST one small chat completion per request (the matrix's and the feature runs').
--
--   wrk -t1 -c1 -d4s --latency -s bench/post.lua URL -- model=bench-model det=1 key=sk-bench
--
-- Arguments after `--` (key=value): model, stream (1: "stream": true), ttft and token (sent as
-- x-sim-ttft-ms and x-sim-token-ms), key (Authorization: Bearer), det (1: the body also has
-- "temperature": 0 and "seed": 1, a call the response cache may answer), api ("anthropic": the
-- same call in Anthropic's Messages format, the system prompt in "system", the key in
-- x-api-key with anthropic-version 2023-06-01; for POST .../v1/messages). The messages and
-- max_tokens are the same for every run, so the figures compare; done() prints one line,
-- `BENCH_JSON {...}`, with the summary and latency in microseconds, so the runner reads numbers,
-- never wrk's human text. errors.status is wrk's count of responses with a status >= 400.

local function options(args)
  local out = {}
  for _, arg in ipairs(args) do
    local name, value = arg:match("^([%w_]+)=(.*)$")
    if name then
      out[name] = value
    end
  end
  return out
end

function init(args)
  local opts = options(args)
  local extra = ""
  if opts.stream == "1" then
    extra = extra .. ',"stream":true'
  end
  if opts.det == "1" then
    extra = extra .. ',"temperature":0,"seed":1'
  end
  wrk.method = "POST"
  if opts.api == "anthropic" then
    wrk.body = '{"model":"' .. (opts.model or "claude-sonnet-4-5") .. '",'
      .. '"system":"You are a terse assistant. Answer in one short sentence.","messages":['
      .. '{"role":"user","content":"What does a gateway in front of a model API do?"}'
      .. '],"max_tokens":16' .. extra .. '}'
    wrk.headers["x-api-key"] = opts.key or "sk-bench"
    wrk.headers["anthropic-version"] = "2023-06-01"
  else
    wrk.body = '{"model":"' .. (opts.model or "gpt-4o-mini") .. '","messages":['
      .. '{"role":"system","content":"You are a terse assistant. Answer in one short sentence."},'
      .. '{"role":"user","content":"What does a gateway in front of a model API do?"}'
      .. '],"max_tokens":16' .. extra .. '}'
    wrk.headers["Authorization"] = "Bearer " .. (opts.key or "sk-bench")
  end
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["x-sim-ttft-ms"] = opts.ttft or "0"
  wrk.headers["x-sim-token-ms"] = opts.token or "0"
end

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q)
    return latency:percentile(q)
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,'
      .. '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},'
      .. '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%.0f,'
      .. '"p50":%.0f,"p90":%.0f,"p99":%.0f,"p99.9":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    p(50), p(90), p(99), p(99.9)
  ))
end
