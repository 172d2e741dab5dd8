-- wrk script for bench/capture_bench.py: POST a 1 KB JSON body, count answers by status.
--
-- Environment (read by every wrk thread):
--   HOOKBIN_BENCH_IDS_DIR  when set, each thread writes the bodies of its 200 answers (Hookbin's
--                          {"ok":true,"request_id":...} lines) to <dir>/ids-<thread>.txt, so the
--                          benchmark can check every acknowledged capture against the database.
--   HOOKBIN_BENCH_DELAY_MS when set, each connection waits this long after an answer before it
--                          sends again: a paced load of about connections * 1000 / delay req/s
--                          from a sender that costs next to no CPU (push-latency runs).
--   HOOKBIN_BENCH_THINK    "exp": each wait is drawn from an exponential distribution with that
--                          mean, so that the connections' sends spread out like independent
--                          senders' (a Poisson stream). Otherwise every wait is exactly the
--                          delay, and connections answered together send together again.
--   HOOKBIN_BENCH_TAG      when set, every request carries ?n=<thread * 10^7 + count>, a number
--                          unique in the run, so each websocket frame can be matched to it.
-- At the end it prints "STATUS <code> <count>" lines and "SENT <count>".

local pad = string.rep("x", 1024)
-- exactly 1024 bytes of valid JSON
local body = '{"event":"bench.capture","pad":"' .. string.sub(pad, 1, 1024 - 34) .. '"}'

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "hookbin-bench-wrk"

local delay_ms = tonumber(os.getenv("HOOKBIN_BENCH_DELAY_MS") or "")
local tag = (os.getenv("HOOKBIN_BENCH_TAG") or "") ~= ""

local exponential = os.getenv("HOOKBIN_BENCH_THINK") == "exp"

if delay_ms ~= nil then
  function delay()
    if exponential then
      return -math.log(1 - math.random()) * delay_ms
    end
    return delay_ms
  end
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tid * 7919)
  counts = {}
  sent = 0
  out = nil
  pending = 0
  local dir = os.getenv("HOOKBIN_BENCH_IDS_DIR")
  if dir ~= nil and dir ~= "" then
    out = io.open(dir .. "/ids-" .. tostring(tid) .. ".txt", "w")
  end
  req = wrk.format()
end

function request()
  sent = sent + 1
  if tag then
    return wrk.format(nil, wrk.path .. "?n=" .. tostring(tid * 10000000 + sent))
  end
  return req
end

function response(status, headers, resp_body)
  counts[status] = (counts[status] or 0) + 1
  if out ~= nil and status == 200 then
    out:write(resp_body)
    pending = pending + 1
    if pending >= 256 then
      out:flush()
      pending = 0
    end
  end
end

function done(summary, latency, requests)
  local totals = {}
  local total_sent = 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    local c = t:get("counts")
    for code, n in pairs(c) do
      totals[code] = (totals[code] or 0) + n
    end
  end
  for code, n in pairs(totals) do
    io.write(string.format("STATUS %d %d\n", code, n))
  end
  io.write(string.format("SENT %d\n", total_sent))
end
