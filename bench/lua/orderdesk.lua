-- wrk script for the orderdesk benchmark.
--
--   wrk -t1 -c32 -d5s -s orderdesk.lua http://127.0.0.1:8101 -- \
--       MODE TARGETS_FILE API_KEY OFFSET BASE_EPOCH
--
-- MODE is one of:
--   tracking, refunds, order  GET a read endpoint; each line of TARGETS_FILE is an
--                             order id, taken in turn
--   refund                    POST .../refunds; each line is "orderId lineItem", and
--                             every request takes the next line, so each asks for a
--                             refund of a line item with none yet
--   event                     POST .../shipments/{packageId}/events; each line is
--                             "orderId packageId", and every event gets its own time
--                             and description, so none is a duplicate
-- OFFSET is the first line to use (0-based), so consecutive runs of one write mode
-- never reuse a target. BASE_EPOCH (seconds) is the occurredAt of event number 0;
-- event n happened n milliseconds later.
-- At the end the script prints one line "WRK_JSON {...}" with the counts and the
-- latency percentiles in microseconds.

local mode, key, offset, base_epoch
local targets = {}
local counter = 0

local paths = {
  tracking = "/api/unstable/orders/%s/tracking",
  refunds = "/api/unstable/orders/%s/refunds",
  order = "/api/2022-06-09/orders/%s",
}

function init(args)
  mode = args[1]
  for line in io.lines(args[2]) do
    if line ~= "" then
      local fields = {}
      for field in line:gmatch("%S+") do
        fields[#fields + 1] = field
      end
      targets[#targets + 1] = fields
    end
  end
  key = args[3]
  offset = tonumber(args[4] or "0")
  base_epoch = tonumber(args[5] or "0")
end

local function next_target()
  local index = offset + counter
  counter = counter + 1
  return targets[(index % #targets) + 1], index
end

local function occurred_at(index)
  local millis = index % 1000
  local seconds = base_epoch + math.floor(index / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", millis)
end

function request()
  local target, index = next_target()
  if paths[mode] then
    return wrk.format("GET", string.format(paths[mode], target[1]), {["X-API-KEY"] = key})
  end
  local headers = {["X-API-KEY"] = key, ["Content-Type"] = "application/json"}
  if mode == "refund" then
    local body = string.format(
      '{"lineItem":%d,"reason":"Bench request %d: the item arrived damaged."}',
      tonumber(target[2]), index)
    return wrk.format(
      "POST", string.format("/api/unstable/orders/%s/refunds", target[1]), headers, body)
  end
  local body = string.format(
    '{"status":"out-for-delivery","occurredAt":"%s","description":"Bench scan %d","location":"New York, NY"}',
    occurred_at(index), index)
  return wrk.format(
    "POST",
    string.format("/api/unstable/orders/%s/shipments/%s/events", target[1], target[2]),
    headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
