-- wrk script for scripts/bench-grpc.sh: POSTs the body in the file $WRK_BODY (JSON, or the
-- binary extension when $WRK_HEADER_LENGTH gives the JSON part's length) and prints one
-- machine-readable RESULT line, as scripts/iris.lua does.
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
local length = os.getenv("WRK_HEADER_LENGTH")
if length and length ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = length
else
  wrk.headers["Content-Type"] = "application/json"
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
