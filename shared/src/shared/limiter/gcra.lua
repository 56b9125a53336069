-- GCRA (generic cell rate algorithm): one check, one key, server time.
-- KEYS[1]  the identifier's state: its theoretical arrival time (TAT) and the moment the key
--          expires, both unix ms, packed as two big-endian doubles (struct '>dd', 16 bytes)
-- ARGV     limit, period (ms), cost
-- Returns  {allowed 0|1, remaining, reset_after_ms, retry_after_ms, now_us}
--
-- One request is "emitted" every period/limit ms; a burst of up to `limit` is tolerated.
-- A request is admitted when max(TAT, now) + cost * interval - now <= period; only then
-- does the TAT move, so rejected requests are not counted.
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / limit
-- 1 µs of slack absorbs floating-point error on `limit * interval == period`.
local slack = 0.001

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = now_us / 1000

local tat, expires = 0, 0
local state = redis.call('GET', KEYS[1])
if state and #state == 16 then
  tat, expires = struct.unpack('>dd', state)
end
-- Anything else, e.g. the sliding window's state after RATE_LIMIT_ALGORITHM changed, is
-- no state.
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed = new_tat - now <= period + slack
local retry = 0
if allowed then
  tat = new_tat
  -- The key must live until its TAT (after that the state equals no state). An admitted TAT
  -- is at most one period ahead, so the expiry is set one period ahead and rewritten only
  -- when a TAT passes it — about once a period under steady traffic — not on every
  -- admission (KEEPTTL: measured, a SET ... PX costs about as much as the rest of a script).
  if tat > expires then
    expires = math.ceil(now + period + slack)
    redis.call('SET', KEYS[1], struct.pack('>dd', tat, expires), 'PXAT', expires)
  else
    redis.call('SET', KEYS[1], struct.pack('>dd', tat, expires), 'KEEPTTL')
  end
else
  retry = math.ceil(new_tat - period - now)
end

local remaining = math.floor((period - (tat - now)) / interval + slack)
if remaining < 0 then remaining = 0 end
return {allowed and 1 or 0, remaining, math.ceil(tat - now), retry, now_us}
