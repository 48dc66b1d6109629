-- wschat: number one room message, keep it in the room's history and
-- publish it, in one step (see src/server/cluster/scripts.rs).
--
-- KEYS[1] wschat:meta:ROOM     hash: epoch, offset (the last one assigned)
-- KEYS[2] wschat:history:ROOM  stream: entry OFFSET-0 per message
-- KEYS[3] wschat:epochs        counter that makes epochs unique
-- ARGV[1] the room's channel, wschat:room:ROOM
-- ARGV[2] history size (0: numbered, not kept)
-- ARGV[3] history TTL, ms
-- ARGV[4] meta TTL, ms
-- ARGV[5] the start of the channel message: kind, sender, time (LEB128)
-- ARGV[6] sender id, ARGV[7] opcode (text or binary), ARGV[8] time, ms
-- ARGV[9] payload
-- Returns the message's offset.

local function leb128(n)
  local out = ''
  while n >= 128 do
    out = out .. string.char(128 + n % 128)
    n = math.floor(n / 128)
  end
  return out .. string.char(n)
end

local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch, last = meta[1], tonumber(meta[2])
if not epoch or not last then
  epoch, last = new_epoch(), 0
  -- Entries left from a lost epoch hold offsets that are not this one's.
  redis.call('DEL', KEYS[2])
end
local offset = last + 1
local id = string.format('%d-0', offset)
local size = tonumber(ARGV[2])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', size, id, 'sender', ARGV[6],
    'opcode', ARGV[7], 'time', ARGV[8], 'payload', ARGV[9])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', string.format('%d', offset))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1],
  ARGV[5] .. leb128(offset) .. string.char(#epoch) .. epoch .. ARGV[9])
return offset
