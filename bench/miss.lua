-- Every request a new URL: /miss/<prefix>-<n>. PREFIX keeps rounds apart.
local prefix = os.getenv("PREFIX") or "0"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/miss/" .. prefix .. "-" .. n)
end
