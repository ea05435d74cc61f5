-- Sum groups of count hashes inside Redis (window reads, see docs/redis.md).
--
-- KEYS[1] labels set, then the bucket hashes of every group, one group after another.
-- ARGV[i] number of keys of group i.
-- Returns { labels (array), group 1 sums (flat field/value array), group 2 sums, ... }.

local out = { redis.call('SMEMBERS', KEYS[1]) }
local k = 2
for g = 1, #ARGV do
  local sums = {}
  local order = {}
  for _ = 1, tonumber(ARGV[g]) do
    local flat = redis.call('HGETALL', KEYS[k])
    for i = 1, #flat, 2 do
      local name = flat[i]
      if sums[name] == nil then
        sums[name] = 0
        order[#order + 1] = name
      end
      sums[name] = sums[name] + tonumber(flat[i + 1])
    end
    k = k + 1
  end
  local reply = {}
  for _, name in ipairs(order) do
    reply[#reply + 1] = name
    reply[#reply + 1] = tostring(sums[name])
  end
  out[#out + 1] = reply
end
return out
