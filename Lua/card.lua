--[[
  An operator's change to a card, with its ledger entry in the same
  execution: issue a card, or move it to another status. The transitions
  allowed live here, in one place:

    pending   -> active, lost, stolen, cancelled
    active    -> blocked, lost, stolen, cancelled
    blocked   -> active, lost, stolen, cancelled
    lost, stolen, cancelled: final (nothing leaves them)

  Input:
    KEYS[1]  card:{ID}:CARD          HASH status, expiry, kind, pan (masked),
                                     issued (Unix ms), replaces, replaced_by
    KEYS[2]  cards:{ID}              SET the account's card ids
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    KEYS[4]  card:{ID}:OLD           "issue" with ARGV[10]: the card replaced;
                                     otherwise KEYS[1] again (not read)

    ARGV[1]  "issue" or "status"
    ARGV[2]  operation id (the entry's id)
    ARGV[3]  account id
    ARGV[4]  card id
    ARGV[5]  the new status (issue: "active" or "pending")
    ARGV[6]  who makes the change (for the entry's `by`)
    ARGV[7]  issue: expiry YYMM ("" for a status change)
    ARGV[8]  issue: "physical" or "virtual" ("" for a status change)
    ARGV[9]  issue: masked PAN (first six, last four) ("" for a status change)
    ARGV[10] issue: the card this one replaces, or "" (it is cancelled unless
             already in a final status, and points to the new one)

  Output:
    {entryid, from, to}                     from "" for an issue
    error "ERR card ..."                    unknown card, a transition out of a
                                            final status or not allowed, a card
                                            id already issued
]]
local card, cards, statements = KEYS[1], KEYS[2], KEYS[3]
local operation, opID, account, cardID, to, by = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local allowed = {
  pending = {active = true, lost = true, stolen = true, cancelled = true},
  active = {blocked = true, lost = true, stolen = true, cancelled = true},
  blocked = {active = true, lost = true, stolen = true, cancelled = true},
}
local final = {lost = true, stolen = true, cancelled = true}

local function entry(id, cardOf, panOf, from, status)
  return redis.call('XADD', statements, '*',
    'type', 'card', 'id', id, 'account', account, 'code', '00', 'amount', '0',
    'card', cardOf, 'pan', panOf, 'from', from, 'to', status, 'by', by, 'reason', '')
end

if operation == 'issue' then
  if to ~= 'active' and to ~= 'pending' then
    return redis.error_reply('ERR card a new card is active or pending')
  end
  if redis.call('EXISTS', card) == 1 then
    return redis.error_reply('ERR card ' .. cardID .. ' already exists')
  end
  local replaces = ARGV[10]
  local oldState
  if replaces ~= '' then
    -- Checked before any write: a script's error does not undo what it wrote.
    oldState = redis.call('HMGET', KEYS[4], 'status', 'pan')
    if not oldState[1] then
      return redis.error_reply('ERR card ' .. replaces .. ' is not a card of account ' .. account)
    end
  end
  local now = redis.call('TIME')
  redis.call('HSET', card, 'status', to, 'expiry', ARGV[7], 'kind', ARGV[8], 'pan', ARGV[9],
    'issued', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), 'replaces', replaces)
  redis.call('SADD', cards, cardID)
  local id = entry(opID, cardID, ARGV[9], '', to)
  if replaces ~= '' then
    redis.call('HSET', KEYS[4], 'replaced_by', cardID)
    if not final[oldState[1]] then
      redis.call('HSET', KEYS[4], 'status', 'cancelled')
      entry(opID .. ':replaced', replaces, oldState[2] or '', oldState[1], 'cancelled')
    end
  end
  return {id, '', to}
end

if operation == 'status' then
  local from = redis.call('HGET', card, 'status')
  if not from then
    return redis.error_reply('ERR card ' .. cardID .. ' is not a card of account ' .. account)
  end
  if final[from] then
    return redis.error_reply('ERR card ' .. cardID .. ' is ' .. from .. ', a final status: nothing leaves it (issue a replacement)')
  end
  if not (allowed[from] and allowed[from][to]) then
    return redis.error_reply('ERR card ' .. cardID .. ' cannot go from ' .. from .. ' to ' .. to)
  end
  redis.call('HSET', card, 'status', to)
  return {entry(opID, cardID, redis.call('HGET', card, 'pan') or '', from, to), from, to}
end

return redis.error_reply('ERR card operation must be issue or status')
