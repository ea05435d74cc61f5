-- Exact window counts of candidate topics for one field, from the ranked index (see docs/redis.md).
--
-- KEYS: the ranked-index sorted sets of one field (a label, or _total) for every bucket of the window.
-- ARGV: the candidate topic names.
-- Work: one ZMSCORE per key and per 1,000 candidates, whatever the number of topics.
-- Returns one integer per candidate: its count of the field summed over the buckets.

local names = ARGV
local sums = {}
for c = 1, #names do
  sums[c] = 0
end
local chunk = 1000
for b = 1, #KEYS do
  for first = 1, #names, chunk do
    local last = math.min(first + chunk - 1, #names)
    local scores = redis.call('ZMSCORE', KEYS[b], unpack(names, first, last))
    for i = 1, #scores do
      if scores[i] then
        sums[first + i - 1] = sums[first + i - 1] + tonumber(scores[i])
      end
    end
  end
end
return sums
