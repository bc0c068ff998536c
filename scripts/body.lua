-- wrk script for the benchmarks (scripts/bench.sh, bench-python.sh, bench-grpc.sh): POSTs
-- the body in the file $WRK_BODY (JSON, or the binary extension when $WRK_HEADER_LENGTH gives
-- the JSON part's length), by default the single-row iris OIP body, and prints one
-- machine-readable RESULT line.
local path = os.getenv("WRK_BODY")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.body = '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
end
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
