-- Replays bench/out/zipf/trace.txt (one key per line) as /z/<prefix>/<key>
-- and counts cache hits from Cache-Status (Outpost) or X-Cache (nginx).
local prefix = os.getenv("PREFIX") or "0"
local host = os.getenv("ZIPF_HOST")
if host == "" then host = nil end
local keys = {}
for line in io.lines(os.getenv("TRACE")) do keys[#keys + 1] = line end
local i = 0
hits = 0
responses = 0
request = function()
  i = i % #keys + 1
  local headers = host and { Host = host } or nil
  return wrk.format("GET", "/z/" .. prefix .. "/" .. keys[i], headers)
end
response = function(status, headers, body)
  responses = responses + 1
  local cs = headers["cache-status"] or headers["Cache-Status"] or ""
  local xc = headers["X-Cache"] or headers["x-cache"] or ""
  if cs:find("; hit", 1, true) or xc == "HIT" then hits = hits + 1 end
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  local h, r = 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hits"); r = r + t:get("responses") end
  io.write(string.format("zipf: %d %d\n", h, r))
end
