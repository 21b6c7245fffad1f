-- secmw rate limits: every limit of one request, checked and then charged, atomically.
--
-- KEYS   per limit, one key (fixed and moving window) or two (sliding window counter: previous,
--        current); one request's keys share a hash tag, so a Redis Cluster keeps them together.
-- ARGV   [1] "1" to charge when every limit has room, "0" to look only, "r" to give back each
--        limit's cost (never below zero; reply {1}): an attempt charged before it was checked
--        that turned out not to count; "a" to charge each limit's cost whether or not it has
--        room: units a worker admitted from memory while Redis was away, carried back;
--        [2] the strategy: "fixed-window", "moving-window" or "sliding-window-counter";
--        then per limit: amount, window (milliseconds), cost.
-- Reply  {admitted, state...}: admitted is 1 when every limit had room; each state is 2 integers
--        (fixed, moving) or 4 (sliding), in milliseconds, as secmw/_ratewindow.py reads them.
--
-- Data layout follows the limits library's Redis scripts: a counter with an expiry (fixed), a
-- list of timestamps, newest first, trimmed to the limit (moving), two counters rotated when a
-- window ends (sliding). Time is the server's (TIME), so workers on every machine agree on it.

local force = ARGV[1] == 'a'
local charge = ARGV[1] == '1' or force
local strategy = ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function ttl(key)
  local left = redis.call('PTTL', key)
  if left < 0 then return 0 end
  return left
end

local function fixed_state(key, window)
  local count = tonumber(redis.call('GET', key) or '0')
  if count == 0 then return {0, 0} end
  local left = redis.call('PTTL', key)
  if left < 0 then -- a counter must never outlive its window
    redis.call('PEXPIRE', key, window)
    left = window
  end
  return {count, left}
end

local function moving_state(key, window)
  local length = redis.call('LLEN', key)
  if length == 0 then return {0, 0} end
  local cutoff = now - window
  local low, high, last = 0, length - 1, -1
  while low <= high do -- newest first: find the last entry still inside the window
    local middle = math.floor((low + high) / 2)
    if tonumber(redis.call('LINDEX', key, middle)) > cutoff then
      last = middle
      low = middle + 1
    else
      high = middle - 1
    end
  end
  if last < 0 then return {0, 0} end
  return {last + 1, now - tonumber(redis.call('LINDEX', key, last))}
end

local function sliding_state(previous, current, window)
  local left = redis.call('PTTL', current)
  if left > 0 and left < window then -- the current window ended: it becomes the previous one
    redis.call('RENAME', current, previous)
    redis.call('SET', current, 0, 'PX', left + window)
  end
  return {
    tonumber(redis.call('GET', previous) or '0'), ttl(previous),
    tonumber(redis.call('GET', current) or '0'), ttl(current),
  }
end

-- The state of the limit at KEYS[key], the units it counts now, and the next limit's key.
local function read_limit(key, window)
  if strategy == 'fixed-window' then
    local state = fixed_state(KEYS[key], window)
    return state, state[1], key + 1
  elseif strategy == 'moving-window' then
    local state = moving_state(KEYS[key], window)
    return state, state[1], key + 1
  end
  local state = sliding_state(KEYS[key], KEYS[key + 1], window)
  return state, math.floor(state[1] * state[2] / window) + state[3], key + 2
end

-- Charge cost units to the limit at KEYS[key] (read as state, updated); the next limit's key.
local function take(key, amount, window, cost, state)
  if strategy == 'fixed-window' then
    local count = redis.call('INCRBY', KEYS[key], cost)
    if count == cost then
      redis.call('PEXPIRE', KEYS[key], window)
      state[2] = window
    end
    state[1] = count
    return key + 1
  elseif strategy == 'moving-window' then
    local entries = {}
    for j = 1, cost do entries[j] = now end
    for j = 1, cost, 5000 do
      redis.call('LPUSH', KEYS[key], unpack(entries, j, math.min(j + 4999, cost)))
    end
    redis.call('LTRIM', KEYS[key], 0, amount - 1)
    redis.call('PEXPIRE', KEYS[key], window)
    if state[1] == 0 then state[2] = 0 end
    state[1] = state[1] + cost
    return key + 1
  end
  local current = KEYS[key + 1]
  if redis.call('EXISTS', current) == 1 then
    redis.call('INCRBY', current, cost)
  else
    redis.call('SET', current, cost, 'PX', 2 * window)
    state[4] = 2 * window
  end
  state[3] = state[3] + cost
  return key + 2
end

-- end of the shared functions (secmw/ratelimit/lease.py appends its own script here)

if ARGV[1] == 'r' then
  local key = 1
  for i = 1, (#ARGV - 2) / 3 do
    local window, cost = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
    if strategy == 'fixed-window' then
      local count = tonumber(redis.call('GET', KEYS[key]) or '0')
      if count > 0 then redis.call('DECRBY', KEYS[key], math.min(cost, count)) end
      key = key + 1
    elseif strategy == 'moving-window' then
      -- newest first: the newest entries go, which frees the same units a little later at most
      for _ = 1, cost do redis.call('LPOP', KEYS[key]) end
      key = key + 1
    else
      local state = sliding_state(KEYS[key], KEYS[key + 1], window)
      local taken = math.min(cost, state[3])
      if taken > 0 then redis.call('DECRBY', KEYS[key + 1], taken) end
      local rest = math.min(cost - taken, state[1])
      if rest > 0 then redis.call('DECRBY', KEYS[key], rest) end
      key = key + 2
    end
  end
  return {1}
end

local states, admitted, key = {}, 1, 1
local limits = (#ARGV - 2) / 3
for i = 1, limits do
  local amount, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 2])
  local state, used
  state, used, key = read_limit(key, tonumber(ARGV[3 * i + 1]))
  if used + cost > amount then admitted = 0 end
  states[i] = state
end

if (admitted == 1 or force) and charge then
  key = 1
  for i = 1, limits do
    local amount, window, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
    key = take(key, amount, window, cost, states[i])
  end
end

local reply = {admitted}
for i = 1, limits do
  for _, value in ipairs(states[i]) do reply[#reply + 1] = value end
end
return reply
