-- Prints wrk's results as one JSON line (prefixed "BENCH ") for the harness to parse.
-- Used by every measured run; it defines no response() hook, so wrk's fast path stays on.

function bench_report(summary, latency, extra)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p99": %d, "max": %d}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, extra or ""))
end

function done(summary, latency, requests)
  bench_report(summary, latency)
end
