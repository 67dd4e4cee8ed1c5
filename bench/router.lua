-- The router workload: one API URL, the service named by X-Service-Name
-- in turn (billing, search, static); HOST, if set, is sent as Host.
local services = {"billing", "search", "static"}
local host = os.getenv("HOST")
local n = 0
request = function()
  n = n + 1
  local headers = {["X-Service-Name"] = services[n % 3 + 1]}
  if host and host ~= "" then headers["Host"] = host end
  return wrk.format("GET", "/api/items", headers)
end
