-- Spreads requests for /1k over TENANTS hosts t0.test .. t<N-1>.test.
local count = tonumber(os.getenv("TENANTS") or "1000")
local i = 0
request = function()
  i = (i + 1) % count
  return wrk.format("GET", "/1k", { Host = "t" .. i .. ".test" })
end
