-- Compare-and-set of one alert's state, with its stream event, atomically (see docs/alerts.md).
--
-- KEYS[1] alert state hash, KEYS[2] alert stream.
-- ARGV[1] field (topic|kind), ARGV[2] expected token ('' = no state yet),
-- ARGV[3] new state JSON, ARGV[4] new token, ARGV[5] event JSON ('' = no event),
-- ARGV[6] stream MAXLEN (approximate).
-- The token names the episode and its phase ('firing:<started>', 'resolved:<started>'),
-- so two evaluators racing on the same transition write it, and its stream event, once.
-- Returns 1 if written, 0 if the state had moved on (nothing written).

local token_field = ARGV[1] .. '#token'
local current = redis.call('HGET', KEYS[1], token_field)
if not current then current = '' end
if current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], token_field, ARGV[4])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'alert', ARGV[5])
end
return 1
