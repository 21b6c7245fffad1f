-- secmw leased budgets: appended to ratelimit.lua's shared functions (read_limit, take...).
--
-- ARGV   [1] "l" to lease, "g" to give back; [2] the strategy; then per limit four values:
--        lease:     amount, window (ms), need (units the asking request takes), want (the slice);
--        give back: amount, window (ms), units, stamp (the lease's server time, in ms).
-- Lease  when every limit has room for its need, each is charged min(want, room) units now, as
--        that many requests would be; else nothing is charged.
--        Reply {leased, stamp, units per limit..., state per limit...}: leased is 1 or 0, stamp
--        the server time (ms) the units were charged at, each state as ratelimit.lua returns it.
-- Give   unused units go back to the window they were charged to: the counter (fixed window,
--        sliding current counter) or the lease's own timestamps (moving window). Reply {1}.

local limits = (#ARGV - 2) / 4

if ARGV[1] == 'g' then
  local key = 1
  for i = 1, limits do
    local window, units = tonumber(ARGV[4 * i]), tonumber(ARGV[4 * i + 1])
    if strategy == 'moving-window' then
      redis.call('LREM', KEYS[key], units, ARGV[4 * i + 2])
      key = key + 1
    else
      local counter = KEYS[key]
      if strategy == 'sliding-window-counter' then
        sliding_state(KEYS[key], KEYS[key + 1], window)
        counter = KEYS[key + 1]
        key = key + 1
      end
      local count = tonumber(redis.call('GET', counter) or '0')
      if count > 0 then redis.call('DECRBY', counter, math.min(units, count)) end
      key = key + 1
    end
  end
  return {1}
end

local states, units, leased, key = {}, {}, 1, 1
for i = 1, limits do
  local amount, need, want = tonumber(ARGV[4 * i - 1]), tonumber(ARGV[4 * i + 1]), tonumber(ARGV[4 * i + 2])
  local state, used
  state, used, key = read_limit(key, tonumber(ARGV[4 * i]))
  if used + need > amount then leased = 0 end
  states[i] = state
  units[i] = math.min(want, amount - used)
end

local reply = {leased, now}
key = 1
for i = 1, limits do
  if leased == 1 then
    key = take(key, tonumber(ARGV[4 * i - 1]), tonumber(ARGV[4 * i]), units[i], states[i])
  else
    units[i] = 0
  end
  reply[#reply + 1] = units[i]
end
for i = 1, limits do
  for _, value in ipairs(states[i]) do reply[#reply + 1] = value end
end
return reply
