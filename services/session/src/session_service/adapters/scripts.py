"""The Lua scripts behind every session write: each operation is one atomic script.

Times come from the server (`TIME`), never from a client clock, so every instance agrees
on expiry. A record's `data` is stored as JSON *text*: cjson would re-encode an empty
object as an empty array.

Single node only. A script touches the session key it was given and keys it derives at run
time — the user index named by the record, the session keys named by the index — from
templates built by `shared.keys`. Redis Cluster refuses undeclared keys in other slots; a
cluster deployment would need the user's hash tag inside the session id, which would
change the key shape fixed in docs/architecture.md#keys. We run one data Redis (`REDIS_URL`),
so we keep one script per operation rather than split each into non-atomic steps
(docs/decisions/0022-one-script-per-session-operation.md).
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Members are scored by expiry: everything at or below `now` is a dead session.
local function prune(idx, now)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', now)
end
-- The index lives exactly as long as its longest-lived member.
local function touch_index(idx)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', idx, top[2]) end
end
local function expiry(now, idle, absolute_at)
  return math.min(now + idle, absolute_at)
end
"""

# KEYS: session, index. ARGV: user_id, data, idle_ms, absolute_ms, cap, hash, s_head, s_tail
CREATE: Final = (
    _PRELUDE
    + """
local now = now_ms()
prune(KEYS[2], now)
local evicted = {}
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5]) + 1
if excess > 0 then
  -- Lowest score = soonest to expire = least recently active.
  for _, h in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('DEL', ARGV[7] .. h .. ARGV[8])
    redis.call('ZREM', KEYS[2], h)
    evicted[#evicted + 1] = h
  end
end
local absolute_at = now + tonumber(ARGV[4])
local expires_at = expiry(now, tonumber(ARGV[3]), absolute_at)
local record = cjson.encode({user_id = ARGV[1], data = ARGV[2], created_at = now,
  last_seen_at = now, expires_at = expires_at, absolute_expires_at = absolute_at})
if not redis.call('SET', KEYS[1], record, 'PX', expires_at - now, 'NX') then
  return redis.error_reply('session id collision')
end
redis.call('ZADD', KEYS[2], expires_at, ARGV[6])
touch_index(KEYS[2])
return {record, evicted}
"""
)

# KEYS: session. ARGV: hash, idle_ms, i_head, i_tail
REFRESH: Final = (
    _PRELUDE
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local rec = cjson.decode(raw)
local now = now_ms()
local idx = ARGV[3] .. rec.user_id .. ARGV[4]
prune(idx, now)
if now >= rec.absolute_expires_at then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', idx, ARGV[1])
  return false
end
rec.last_seen_at = now
rec.expires_at = expiry(now, tonumber(ARGV[2]), rec.absolute_expires_at)
local encoded = cjson.encode(rec)
redis.call('SET', KEYS[1], encoded, 'PX', rec.expires_at - now)
redis.call('ZADD', idx, rec.expires_at, ARGV[1])
touch_index(idx)
return encoded
"""
)

# KEYS: old session, new session. ARGV: old hash, new hash, idle_ms, i_head, i_tail
# The new session keeps user, data and the absolute expiry: rotating never extends a
# session's lifetime, only its id changes. `rotated_from` lets a revoke that keeps the old
# hash keep its successor too (a password change rotates the session that made it).
ROTATE: Final = (
    _PRELUDE
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local rec = cjson.decode(raw)
local now = now_ms()
local idx = ARGV[4] .. rec.user_id .. ARGV[5]
redis.call('DEL', KEYS[1])
redis.call('ZREM', idx, ARGV[1])
prune(idx, now)
if now >= rec.absolute_expires_at then return false end
rec.created_at = now
rec.last_seen_at = now
rec.rotated_from = ARGV[1]
rec.expires_at = expiry(now, tonumber(ARGV[3]), rec.absolute_expires_at)
local encoded = cjson.encode(rec)
if not redis.call('SET', KEYS[2], encoded, 'PX', rec.expires_at - now, 'NX') then
  return redis.error_reply('session id collision')
end
redis.call('ZADD', idx, rec.expires_at, ARGV[2])
touch_index(idx)
return encoded
"""
)

# KEYS: session. ARGV: hash, i_head, i_tail. Returns the owner's id, or false.
DESTROY: Final = (
    _PRELUDE
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local rec = cjson.decode(raw)
local idx = ARGV[2] .. rec.user_id .. ARGV[3]
redis.call('DEL', KEYS[1])
redis.call('ZREM', idx, ARGV[1])
prune(idx, now_ms())
touch_index(idx)
return rec.user_id
"""
)

# KEYS: index. ARGV: s_head, s_tail. Returns {hash1, record1, hash2, record2, ...}.
LIST: Final = (
    _PRELUDE
    + """
prune(KEYS[1], now_ms())
local out = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('GET', ARGV[1] .. h .. ARGV[2])
  if raw then
    out[#out + 1] = h
    out[#out + 1] = raw
  else
    redis.call('ZREM', KEYS[1], h)
  end
end
touch_index(KEYS[1])
return out
"""
)

# KEYS: index. ARGV: s_head, s_tail, keep hash or '', created-before ms or -1.
# Returns the hashes revoked. `keep` and the session rotated from it survive. With a
# cut-off, sessions created after it survive too, so a redelivered
# `user.password_changed` never logs out a sign-in made with the new password.
REVOKE_ALL: Final = (
    _PRELUDE
    + """
prune(KEYS[1], now_ms())
local keep, cutoff = ARGV[3], tonumber(ARGV[4])
local function doomed(raw)
  local rec = cjson.decode(raw)
  if keep ~= '' and rec.rotated_from == keep then return false end
  return cutoff < 0 or rec.created_at <= cutoff
end
local revoked = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if h ~= keep then
    local key = ARGV[1] .. h .. ARGV[2]
    local raw = redis.call('GET', key)
    if not raw then
      redis.call('ZREM', KEYS[1], h)
    elseif doomed(raw) then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], h)
      revoked[#revoked + 1] = h
    end
  end
end
touch_index(KEYS[1])
return revoked
"""
)
