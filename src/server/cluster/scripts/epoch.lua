-- wschat: what both scripts share, put before each of them when they are
-- loaded (see src/server/cluster/scripts.rs). KEYS[3] is wschat:epochs.

local function base36(n, width)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local out = ''
  repeat
    local d = n % 36
    out = string.sub(digits, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return string.rep('0', width - #out) .. out
end

-- A new epoch: the server's time in microseconds, then a counter, so no
-- two are alike even after the data (and the counter) was lost.
local function new_epoch()
  local now = redis.call('TIME')
  local micros = tonumber(now[1]) * 1000000 + tonumber(now[2])
  return base36(micros, 11) .. base36(redis.call('INCR', KEYS[3]), 1)
end

