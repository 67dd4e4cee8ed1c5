-- The platform workload's passes: POST /api/echo to the billing service
-- named by X-Service-Name, Host from HOST.
local host = os.getenv("HOST")
request = function()
  local headers = {["X-Service-Name"] = "billing", ["Host"] = host}
  return wrk.format("POST", "/api/echo", headers)
end
