-- Counts responses per X-Worker header (the serving PID) and adds the counts to the JSON line.
-- A response() hook makes wrk parse every header, so this runs in a pass of its own.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "summary.lua")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  per_worker = {}
end

function response(status, headers, body)
  local worker = headers["X-Worker"] or headers["x-worker"] or "?"
  per_worker[worker] = (per_worker[worker] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for worker, count in pairs(thread:get("per_worker")) do
      totals[worker] = (totals[worker] or 0) + count
    end
  end
  local parts = {}
  for worker, count in pairs(totals) do
    table.insert(parts, string.format('"%s": %d', worker, count))
  end
  bench_report(summary, latency, ', "per_worker": {' .. table.concat(parts, ", ") .. '}')
end
