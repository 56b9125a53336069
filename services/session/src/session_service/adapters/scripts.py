"""The Lua scripts behind every session write: each operation is one atomic script.

Times come from the server (`TIME`), never from a client clock, so every instance agrees
on expiry. A record's `data` is stored as JSON *text*: cjson would re-encode an empty
object as an empty array.

One slot, every key declared. A session's record and its owner's index share the owner's
hash tag (`shared.keys`), so each script runs on the one node that serves that user, on a
cluster as on a single server. The index is `KEYS[1]` and the records a script touches follow
it. Scripts that walk the index (create at the cap, list, revoke-all) learn its members only
by reading it: they touch a record the caller declared, and when the index names one it did
not, they write nothing but a prune and answer `{'missing', hash...}`; the store calls again
with those declared (`{'ok', ...}` otherwise). Only when the user's index keeps changing
under the store's calls does its last call turn `strict` off: then a record not declared is
touched all the same — a key of the same owner, so of the same slot, which Redis runs.
Declaring is preferred because the server checks the slot of declared keys before a script
starts; an undeclared key whose slot is migrating fails the script half-way, its first
writes done (docs/decisions/0032-sessions-in-their-owners-slot.md).
"""

from __future__ import annotations

from typing import Final

# The status word that opens the reply of a script that walks the index.
OK: Final = b"ok"
MISSING: Final = b"missing"

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
-- A record's key by its hash: `head .. hash` (ARGV), when the caller declared it in
-- KEYS[first...]; when it did not, nil, or with `strict` off the key all the same (it has the
-- owner's hash tag, so the index's slot).
local function records(first, head, strict)
  local declared = {}
  for i = first, #KEYS do declared[KEYS[i]] = true end
  return function(h)
    local name = head .. h
    if declared[name] or strict ~= '1' then return name end
    return nil
  end
end
-- {'missing', hash...} for the hashes `record` does not resolve, or nil.
local function undeclared(record, hashes)
  local out = {'missing'}
  for _, h in ipairs(hashes) do
    if not record(h) then out[#out + 1] = h end
  end
  if #out > 1 then return out end
  return nil
end
"""

# KEYS: index, new record, records the caller knows of... ARGV: user_id, data, idle_ms,
# absolute_ms, cap, hash, record head, strict. Returns {'ok', record, evicted hash...} or
# {'missing', hash...}.
# At the cap it evicts the soonest to expire (lowest score: least recently active) of the
# sessions the caller declared, so that sessions a concurrent call created since are never
# what it waits for: only when too few declared ones are left does it ask for the others.
CREATE: Final = (
    _PRELUDE
    + """
local idx = KEYS[1]
local now = now_ms()
prune(idx, now)
local record = records(3, ARGV[7], ARGV[8])
local doomed = {}
local excess = redis.call('ZCARD', idx) - tonumber(ARGV[5]) + 1
if excess > 0 then
  local members = redis.call('ZRANGE', idx, 0, -1)
  for _, h in ipairs(members) do
    if #doomed < excess and record(h) then doomed[#doomed + 1] = h end
  end
  if #doomed < excess then return undeclared(record, members) end
end
local out = {'ok', false}
for _, h in ipairs(doomed) do
  redis.call('DEL', record(h))
  redis.call('ZREM', idx, h)
  out[#out + 1] = h
end
local absolute_at = now + tonumber(ARGV[4])
local expires_at = expiry(now, tonumber(ARGV[3]), absolute_at)
local encoded = cjson.encode({user_id = ARGV[1], data = ARGV[2], created_at = now,
  last_seen_at = now, expires_at = expires_at, absolute_expires_at = absolute_at})
if not redis.call('SET', KEYS[2], encoded, 'PX', expires_at - now, 'NX') then
  return redis.error_reply('session id collision')
end
redis.call('ZADD', idx, expires_at, ARGV[6])
touch_index(idx)
out[2] = encoded
return out
"""
)

# KEYS: index, record. ARGV: hash, idle_ms.
REFRESH: Final = (
    _PRELUDE
    + """
local idx, key = KEYS[1], KEYS[2]
local raw = redis.call('GET', key)
if not raw then return false end
local rec = cjson.decode(raw)
local now = now_ms()
prune(idx, now)
if now >= rec.absolute_expires_at then
  redis.call('DEL', key)
  redis.call('ZREM', idx, ARGV[1])
  return false
end
rec.last_seen_at = now
rec.expires_at = expiry(now, tonumber(ARGV[2]), rec.absolute_expires_at)
local encoded = cjson.encode(rec)
redis.call('SET', key, encoded, 'PX', rec.expires_at - now)
redis.call('ZADD', idx, rec.expires_at, ARGV[1])
touch_index(idx)
return encoded
"""
)

# KEYS: index, old record, new record. ARGV: old hash, new hash, idle_ms.
# The new session keeps user, data and the absolute expiry: rotating never extends a
# session's lifetime, only its id changes. `rotated_from` lets a revoke that keeps the old
# hash keep its successor too (a password change rotates the session that made it).
ROTATE: Final = (
    _PRELUDE
    + """
local idx = KEYS[1]
local raw = redis.call('GET', KEYS[2])
if not raw then return false end
local rec = cjson.decode(raw)
local now = now_ms()
redis.call('DEL', KEYS[2])
redis.call('ZREM', idx, ARGV[1])
prune(idx, now)
if now >= rec.absolute_expires_at then return false end
rec.created_at = now
rec.last_seen_at = now
rec.rotated_from = ARGV[1]
rec.expires_at = expiry(now, tonumber(ARGV[3]), rec.absolute_expires_at)
local encoded = cjson.encode(rec)
if not redis.call('SET', KEYS[3], encoded, 'PX', rec.expires_at - now, 'NX') then
  return redis.error_reply('session id collision')
end
redis.call('ZADD', idx, rec.expires_at, ARGV[2])
touch_index(idx)
return encoded
"""
)

# KEYS: index, record. ARGV: hash. Returns the owner's id, or false.
DESTROY: Final = (
    _PRELUDE
    + """
local idx = KEYS[1]
local raw = redis.call('GET', KEYS[2])
if not raw then return false end
local rec = cjson.decode(raw)
redis.call('DEL', KEYS[2])
redis.call('ZREM', idx, ARGV[1])
prune(idx, now_ms())
touch_index(idx)
return rec.user_id
"""
)

# KEYS: index, records... ARGV: record head, strict. Returns {'ok', hash1, record1, hash2,
# record2, ...} or {'missing', hash...}.
LIST: Final = (
    _PRELUDE
    + """
local idx = KEYS[1]
prune(idx, now_ms())
local members = redis.call('ZRANGE', idx, 0, -1)
local record = records(2, ARGV[1], ARGV[2])
local missing = undeclared(record, members)
if missing then return missing end
local out = {'ok'}
for _, h in ipairs(members) do
  local raw = redis.call('GET', record(h))
  if raw then
    out[#out + 1] = h
    out[#out + 1] = raw
  else
    redis.call('ZREM', idx, h)
  end
end
touch_index(idx)
return out
"""
)

# KEYS: index, records... ARGV: keep hash or '', created-before ms or -1, record head, strict.
# Returns {'ok', revoked hash...} or {'missing', hash...}. `keep` and the session rotated
# from it survive. With a cut-off, sessions created after it survive too, so a redelivered
# `user.password_changed` never logs out a sign-in made with the new password.
REVOKE_ALL: Final = (
    _PRELUDE
    + """
local idx = KEYS[1]
prune(idx, now_ms())
local keep, cutoff = ARGV[1], tonumber(ARGV[2])
local others = {}
for _, h in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  if h ~= keep then others[#others + 1] = h end
end
local record = records(2, ARGV[3], ARGV[4])
local missing = undeclared(record, others)
if missing then return missing end
local function doomed(raw)
  local rec = cjson.decode(raw)
  if keep ~= '' and rec.rotated_from == keep then return false end
  return cutoff < 0 or rec.created_at <= cutoff
end
local out = {'ok'}
for _, h in ipairs(others) do
  local raw = redis.call('GET', record(h))
  if not raw then
    redis.call('ZREM', idx, h)
  elseif doomed(raw) then
    redis.call('DEL', record(h))
    redis.call('ZREM', idx, h)
    out[#out + 1] = h
  end
end
touch_index(idx)
return out
"""
)
