-- GCRA (generic cell rate algorithm): one check, one key, server time.
-- KEYS[1]  the identifier's theoretical arrival time (TAT), unix ms with 3 decimals
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

-- Anything unreadable (e.g. the other algorithm's state after RATE_LIMIT_ALGORITHM changed)
-- counts as no state.
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed = new_tat - now <= period + slack
local retry = 0
if allowed then
  tat = new_tat
  -- Once the TAT is in the past the state equals no state: let it expire then.
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now))
else
  retry = math.ceil(new_tat - period - now)
end

local remaining = math.floor((period - (tat - now)) / interval + slack)
if remaining < 0 then remaining = 0 end
return {allowed and 1 or 0, remaining, math.ceil(tat - now), retry, now_us}
