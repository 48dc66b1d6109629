-- wschat: a room's epoch, head offset and history, in one step (see
-- src/server/cluster/scripts.rs).
--
-- KEYS[1] wschat:meta:ROOM, KEYS[2] wschat:history:ROOM, KEYS[3] wschat:epochs
-- ARGV[1] meta TTL, ms
-- ARGV[2] most entries returned (the history size)
-- ARGV[3] 'since' or 'last'
-- ARGV[4] since: the epoch the client knows
-- ARGV[5] since: the last offset it has; last: how many entries
-- Returns {epoch, head, entries}: entries as XRANGE returns them, oldest
-- first: since, what followed the offset (the newest ones if more did)
-- when the epoch matches, else the newest; last, the newest n.

local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch, head = meta[1], tonumber(meta[2])
if not epoch or not head then
  -- Created now, so that the epoch told to a client is the one the
  -- room's next messages carry.
  epoch, head = new_epoch(), 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', '0')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])

local count = tonumber(ARGV[2])
local after = '-'
if ARGV[3] == 'since' then
  if ARGV[4] == epoch then
    after = '(' .. ARGV[5] .. '-0'
  end
else
  count = math.min(count, tonumber(ARGV[5]))
end
local entries = {}
if count > 0 then
  local newest = redis.call('XREVRANGE', KEYS[2], '+', after, 'COUNT', count)
  for i = #newest, 1, -1 do
    entries[#entries + 1] = newest[i]
  end
end
return {epoch, head, entries}
