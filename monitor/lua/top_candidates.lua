-- Candidates for a top-N query over a window, from the ranked index (see docs/redis.md).
--
-- KEYS: the ranked-index sorted sets (topic -> count of one field) of every bucket of the window.
-- ARGV[1] depth: how many of the best members are read from each bucket,
-- ARGV[2] how many candidates to return.
-- Work: one ZREVRANGE of at most `depth` members per key, whatever the number of topics.
-- Returns { bound, name 1, name 2, ... }: the candidates by the sum of the counts read
-- (descending, ties by name), and `bound`, the most a topic that is not returned can have in
-- the window (a topic not read in a bucket has at most that bucket's lowest count read, or 0
-- when the bucket was read whole).  bound = 0: every topic with a count is returned.

local depth = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local partial = {}
local floors = {}
local names = {}
local threshold = 0
for i = 1, #KEYS do
  local rows = redis.call('ZREVRANGE', KEYS[i], 0, depth - 1, 'WITHSCORES')
  local floor = 0
  if #rows >= 2 * depth then
    floor = tonumber(rows[#rows])
  end
  threshold = threshold + floor
  for j = 1, #rows, 2 do
    local name = rows[j]
    if partial[name] == nil then
      partial[name] = 0
      floors[name] = 0
      names[#names + 1] = name
    end
    partial[name] = partial[name] + tonumber(rows[j + 1])
    floors[name] = floors[name] + floor
  end
end
table.sort(names, function(x, y)
  if partial[x] ~= partial[y] then
    return partial[x] > partial[y]
  end
  return x < y
end)
local bound = threshold
for i = want + 1, #names do
  local name = names[i]
  local most = partial[name] + threshold - floors[name]
  if most > bound then
    bound = most
  end
end
local out = { tostring(bound) }
for i = 1, math.min(want, #names) do
  out[#out + 1] = names[i]
end
return out
