-- Sliding-window counter: one check, one key, server time, rejected requests not counted.
-- KEYS[1]  the identifier's state: window index, previous count, current count, packed as
--          three big-endian doubles (struct '>ddd', 24 bytes: fixed size, and unpacking costs
--          about 2 µs less per call than formatting and matching text)
-- ARGV     limit, window (ms), cost
-- Returns  {allowed 0|1, remaining, reset_after_ms, retry_after_ms, now_us}
--
-- The count over the last window is estimated as
--   floor(previous * (window - elapsed) / window) + current
-- (the previous window's requests assumed evenly spread). A request is admitted when the
-- estimate plus its cost stays within the limit; only admitted requests are added.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local index = math.floor(now / window)
local elapsed = now - index * window

local previous, current = 0, 0
local same_window = false
local state = redis.call('GET', KEYS[1])
local i, p, c
if state and #state == 24 then
  i, p, c = struct.unpack('>ddd', state)
end
-- Anything else (e.g. GCRA's state after RATE_LIMIT_ALGORITHM changed) counts as no state.
if i == index then
  previous, current = p, c
  same_window = true
elseif i ~= nil and i == index - 1 then
  previous = c
end

local weighted = math.floor(previous * (window - elapsed) / window)
local allowed = weighted + current + cost <= limit
local retry = 0
if allowed then
  current = current + cost
  -- The state matters until the end of the next window, when `current` has fully decayed.
  -- Fixed-width state: the value (and so MEMORY USAGE) does not grow with the count.
  local value = struct.pack('>ddd', index, previous, current)
  if same_window then
    -- The expiry is the end of the next window, fixed for the whole of this one: it was set
    -- by the first admission in this window. KEEPTTL skips the expiry rewrite (measured:
    -- a SET ... PX in a script costs about as much as the rest of it).
    redis.call('SET', KEYS[1], value, 'KEEPTTL')
  else
    redis.call('SET', KEYS[1], value, 'PX', 2 * window - elapsed)
  end
elseif current + cost <= limit then
  -- Later in this window, once the previous window's weight has decayed enough:
  -- floor(previous * (window - e) / window) <= room  <=>  e >= window - ceil(x) + 1.
  local room = limit - current - cost
  local e = window - math.ceil((room + 1) * window / previous) + 1
  retry = e - elapsed
else
  -- In the next window, where `current` becomes the decaying previous count.
  local room = limit - cost
  local e = 0
  if current > room then
    e = window - math.ceil((room + 1) * window / current) + 1
  end
  retry = window - elapsed + e
end

local remaining = limit - weighted - current  -- `current` includes an admitted request
if remaining < 0 then remaining = 0 end
return {allowed and 1 or 0, remaining, window - elapsed, retry, now_us}
