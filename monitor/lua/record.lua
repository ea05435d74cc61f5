-- Atomic, idempotent write of a batch of sentiment results (see docs/redis.md).
--
-- KEYS[1] topics sorted set, KEYS[2] labels set, KEYS[3] out-of-window hash,
-- then per post: seen marker, result key, the ranked indexes of its minute and hour
-- (minute/label, minute/_total, hour/label, hour/_total: sorted sets topic -> count),
-- and per topic of the post: minute bucket, hourly roll-up, recent list.
-- ARGV[1] seen TTL (s), ARGV[2] result TTL (s), ARGV[3] recent list cap,
-- ARGV[4] recent list TTL (s), ARGV[5] number of posts, then per post 7 values:
-- number of topics, label, window kind ('ok' | 'future' | 'expired'),
-- event time (epoch s), minute bucket EXPIREAT, hourly roll-up EXPIREAT, result JSON,
-- followed by the post's topic names (one per topic).
-- Returns one integer per post: 1 = newly counted, 0 = already seen (nothing written).

local seen_ttl = tonumber(ARGV[1])
local result_ttl = tonumber(ARGV[2])
local recent_cap = tonumber(ARGV[3])
local recent_ttl = tonumber(ARGV[4])
local n_posts = tonumber(ARGV[5])

local out = {}
local k = 4
local a = 6
for p = 1, n_posts do
  local n_topics = tonumber(ARGV[a])
  local label = ARGV[a + 1]
  local kind = ARGV[a + 2]
  local event_ts = ARGV[a + 3]
  local minute_expire = ARGV[a + 4]
  local hour_expire = ARGV[a + 5]
  local result_json = ARGV[a + 6]
  a = a + 7

  local seen_key = KEYS[k]
  local result_key = KEYS[k + 1]
  local rank_m_label, rank_m_total = KEYS[k + 2], KEYS[k + 3]
  local rank_h_label, rank_h_total = KEYS[k + 4], KEYS[k + 5]
  k = k + 6

  if redis.call('SET', seen_key, '1', 'NX', 'EX', seen_ttl) then
    redis.call('SET', result_key, result_json, 'EX', result_ttl)
    if kind == 'ok' then
      redis.call('SADD', KEYS[2], label)
    else
      redis.call('HINCRBY', KEYS[3], kind, 1)
    end
    for t = 1, n_topics do
      local minute_key = KEYS[k]
      local hour_key = KEYS[k + 1]
      local recent_key = KEYS[k + 2]
      if kind == 'ok' then
        redis.call('HINCRBY', minute_key, label, 1)
        redis.call('HINCRBY', minute_key, '_total', 1)
        redis.call('EXPIREAT', minute_key, minute_expire)
        redis.call('HINCRBY', hour_key, label, 1)
        redis.call('HINCRBY', hour_key, '_total', 1)
        redis.call('EXPIREAT', hour_key, hour_expire)
        local topic = ARGV[a + t - 1]
        redis.call('ZADD', KEYS[1], 'GT', event_ts, topic)
        redis.call('ZINCRBY', rank_m_label, 1, topic)
        redis.call('ZINCRBY', rank_m_total, 1, topic)
        redis.call('ZINCRBY', rank_h_label, 1, topic)
        redis.call('ZINCRBY', rank_h_total, 1, topic)
      end
      redis.call('LPUSH', recent_key, result_json)
      redis.call('LTRIM', recent_key, 0, recent_cap - 1)
      redis.call('EXPIRE', recent_key, recent_ttl)
      k = k + 3
    end
    if kind == 'ok' then
      redis.call('EXPIREAT', rank_m_label, minute_expire)
      redis.call('EXPIREAT', rank_m_total, minute_expire)
      redis.call('EXPIREAT', rank_h_label, hour_expire)
      redis.call('EXPIREAT', rank_h_total, hour_expire)
    end
    out[p] = 1
  else
    k = k + 3 * n_topics
    out[p] = 0
  end
  a = a + n_topics
end
return out
