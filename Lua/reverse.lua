--[[
  Reverse one card transaction: take the account lock, check the reversal's
  own idempotency record and the original's record, credit back exactly the
  debits the original made (per category, as recorded), mark the original
  reversed and append a `reversal` statement, all in one atomic execution.

  When the original was never seen (the reversal overtook it, or it never
  arrived) a tombstone is left under the original's id: an authorization
  arriving later with that id is answered 07 "reversed" by authorize.lua and
  debits nothing.

  Input:
    KEYS[1]  account:{ID}            HASH category -> balance in cents
    KEYS[2]  lock:{ID}               STRING lock token
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    KEYS[4]  txn:{ID}:ORIGINAL       STRING the original's older one-key record
    KEYS[5]  txn:{ID}:REVID          STRING the reversal's older one-key record
                                     (both read only when ARGV[13] is "1")
    KEYS[6]  spent:{ID}              HASH what approvals consumed in the controls'
                                     windows (see authorize.lua)
    KEYS[7..] txns:{ID}:YYYYMMDD     HASH the day buckets (see authorize.lua):
                                     consecutive days, newest first, KEYS[7] being
                                     the caller's tomorrow; every bucket from
                                     Redis's today on is read

    ARGV[1]  lock token (random per request)
    ARGV[2]  lock ttl in milliseconds
    ARGV[3]  reversal id
    ARGV[4]  account id
    ARGV[5]  original transaction id
    ARGV[6]  amount in cents the terminal gave, or "" (then not checked)
    ARGV[7]  mcc the terminal gave, or ""
    ARGV[8]  merchant descriptor the terminal gave, normalized, or ""
    ARGV[9]  digest of ARGV[8] (8 hex digits), or ""
    ARGV[10] reversal window in milliseconds: an original decided longer ago
             than this is "original not found"
    ARGV[11] the day of KEYS[7], in days since 1970-01-01 (UTC)
    ARGV[12] seconds a day's bucket outlives its day (as authorize.lua's ARGV[14])
    ARGV[13] "1": also read KEYS[4] and KEYS[5] (records written before the day buckets)
    ARGV[14] the service's own reversal of a timed-out request (id
             timeout/ORIGINAL): when that request was answered 07 (µs, the
             serve's wall clock); "" for a terminal's reversal. An approval
             whose HEARD is later (an attempt received after that 07 was
             answered it) stands: nothing is credited and nothing recorded,
             so the reversal owed for a later 07 of the id still runs
    ARGV[15..] optional: extra statement fields as name, value pairs appended
             to the reversal statement (the ISO 8583 port sends channel, stan,
             rrn, terminal, merchant_id); none from the line-JSON port

  Output (array), the shape of authorize.lua's:
    {"UNKNOWN"}                               account does not exist; nothing written
    {"LOCKED", pttl}                          another holder has the lock (and the
                                              reversal id was not decided before)
    {"DONE", code, detail, replayed, entryid} code "00" (reversal acknowledged;
                                              detail = the credits, "" when
                                              nothing was credited; "heard
                                              later" when ARGV[14] yields)
                                              or "07"
                                              (detail = reason); replayed = 1
                                              when the reversal id was seen
                                              before (nothing written)
  A 07 (mismatch, original not found) is recorded in the ledger but leaves no
  record: a corrected retry is processed normally. The caller releases the
  lock with unlock.lua.
]]
local account, lock, statements = KEYS[1], KEYS[2], KEYS[3]
local token, ttl = ARGV[1], ARGV[2]
local reversalId, accountId, originalId = ARGV[3], ARGV[4], ARGV[5]
local givenAmount, givenMcc, givenMerchant, givenDigest = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local window = tonumber(ARGV[10])
local legacy = ARGV[13] == '1'

local now = redis.call('TIME')
local seconds = tonumber(now[1])
local nowMs = seconds * 1000 + math.floor(tonumber(now[2]) / 1000)
local day = math.floor(seconds / 86400)
local todayKey = 7 + tonumber(ARGV[11]) - day
if todayKey < 7 or todayKey >= #KEYS then
  return redis.error_reply('ERR clock: Redis day ' .. day .. ' is not among the buckets named (newest ' .. ARGV[11] .. ')')
end
local today = KEYS[todayKey]

if redis.call('EXISTS', account) == 0 then
  return {'UNKNOWN'}
end

-- An id's record and where it is: the index of its bucket in KEYS, or 0
-- for the older key.
local function find(id, legacyKey)
  for k = todayKey, #KEYS do
    local record = redis.call('HGET', KEYS[k], id)
    if record then return k, record end
  end
  if legacy then
    local record = redis.call('GET', legacyKey)
    if record then return 0, record end
  end
  return nil, nil
end

-- A decided reversal gets its first decision whatever the lock (its holder
-- may have died with this very reversal in flight). The record is rewritten
-- as it was, so a WAIT that follows covers the write that made it.
local mineAt, mine = find(reversalId, KEYS[5])
if mine then
  if mineAt == 0 then
    redis.pcall('SET', KEYS[5], mine, 'KEEPTTL')
  else
    redis.pcall('HSET', KEYS[mineAt], reversalId, mine)
  end
  local credits = string.match(mine, '^RV|%d%d|[^|]*|(.*)$')
  if credits then
    return {'DONE', '00', credits, 1, ''}
  end
  return {'DONE', '07', 'id already used by an authorization', 1, ''}
end

if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then
  if redis.call('GET', lock) ~= token then
    return {'LOCKED', redis.call('PTTL', lock)}
  end
  redis.call('PEXPIRE', lock, ttl)
end

-- The original's record: CODE|DETAIL|AMOUNT|MCC|SECOND|REVERSED_BY|DIGEST in
-- a bucket; CODE|DETAIL|AMOUNT|MCC|TIME_MS|REVERSED_BY|MERCHANT or
-- CODE|DETAIL in the older key.
local where, record = find(originalId, KEYS[4])
local inBucket = where and where > 0
local code, detail, amount, mcc, decided, reversedBy, merchant
if record then
  code, detail, amount, mcc, decided, reversedBy, merchant =
    string.match(record, '^(%d%d)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not code then
    code, detail = string.match(record, '^(%d%d)|([^|]*)$')
    amount, mcc, decided, reversedBy, merchant = '', '', '', '', ''
  end
  if not code then
    return {'DONE', '07', 'original is a reversal', 0, ''}
  end
end
-- A bucket's record ends with the digest, then HEARD and CONSUMED (see authorize.lua).
local heard, consumed = 0, ''
if inBucket and merchant then
  local digest, at, rest = string.match(merchant, '^([^|]*)|(%d+)|?(.*)$')
  if digest then merchant, heard, consumed = digest, tonumber(at), rest end
end

-- The service's reversal of a 07 yields to a later attempt answered the
-- approval: the terminal heard that last.
local owedSince = tonumber(ARGV[14])
if owedSince and code == '00' and reversedBy == '' and heard > owedSince then
  return {'DONE', '00', 'heard later', 1, ''}
end

local function statement(resultCode, statementAmount, credits, balances, reason, statementMcc, statementMerchant)
  local fields = {
    'type', 'reversal',
    'id', reversalId,
    'account', accountId,
    'code', resultCode,
    'amount', statementAmount,
    'mcc', statementMcc,
    'mcc_used', '',
    'merchant', statementMerchant,
    'category', '',
    'original', originalId,
    'debits', '',
    'credits', credits,
    'balances', balances,
    'reason', reason}
  for i = 15, #ARGV - 1, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  return redis.call('XADD', statements, '*', unpack(fields))
end

local function remember(id, value)
  redis.call('HSET', today, id, value)
  redis.call('EXPIREAT', today, (day + 1) * 86400 + tonumber(ARGV[12]), 'NX')
end

local function refuse(reason)
  local entry = statement('07', '0', '', '', reason, givenMcc, givenMerchant)
  return {'DONE', '07', reason, 0, entry}
end

-- The merchant a reversal statement names: the older record's text, else the terminal's.
local statementMerchant = givenMerchant
if record and not inBucket and merchant ~= '' then statementMerchant = merchant end

local function acknowledge(statementAmount, credits, balances, reason, statementMcc)
  local entry = statement('00', statementAmount, credits, balances, reason, statementMcc, statementMerchant)
  remember(reversalId, 'RV|00|' .. originalId .. '|' .. credits)
  return {'DONE', '00', credits, 0, entry}
end

if not record then
  -- Never seen: leave the tombstone, so the original is refused if it comes.
  remember(originalId, table.concat({'07', 'reversed', givenAmount, givenMcc, seconds - day * 86400, reversalId, givenDigest}, '|'))
  local statementAmount = givenAmount
  if statementAmount == '' then statementAmount = '0' end
  return acknowledge(statementAmount, '', '', 'original not seen; tombstone left', givenMcc)
end

-- When the original was decided, in ms: a bucket keeps the second of its day.
local decidedAt
if inBucket and tonumber(decided) then
  local bucketDay = tonumber(ARGV[11]) - (where - 7)
  decidedAt = (bucketDay * 86400 + tonumber(decided)) * 1000
elseif tonumber(decided) then
  decidedAt = tonumber(decided)
end
if decidedAt and nowMs - decidedAt > window then
  return refuse('original not found')
end
if givenAmount ~= '' and amount ~= '' and givenAmount ~= amount then
  return refuse('amount does not match the original')
end
if givenMcc ~= '' and mcc ~= '' and givenMcc ~= mcc then
  return refuse('mcc does not match the original')
end
local givenMerchantKey = givenMerchant
if inBucket then givenMerchantKey = givenDigest end
if givenMerchantKey ~= '' and merchant ~= '' and givenMerchantKey ~= merchant then
  return refuse('merchant does not match the original')
end

local recordAmount = amount
if recordAmount == '' then recordAmount = '0' end

if reversedBy ~= '' then
  return acknowledge(recordAmount, '', '', 'already reversed', mcc)
end

-- What the original consumed in the controls' windows, given back in the
-- windows still current (a window that has passed was reset since).
local function giveBack()
  for field, period in string.gmatch(consumed, '([^,/]+)/(%d+)') do
    local value = redis.call('HGET', KEYS[6], field) or ''
    local current, spentAmount, spentCount = string.match(value, '^(%d+):(%d+):(%d+)$')
    if string.sub(field, -2) == '.r' then
      -- A trailing window: the original's item leaves it (once), if still inside.
      local items, removed = {}, false
      for item in string.gmatch(value, '[^,]+') do
        if not removed and item == period .. ':' .. amount then
          removed = true
        else
          items[#items + 1] = item
        end
      end
      if removed then redis.call('HSET', KEYS[6], field, table.concat(items, ',')) end
    elseif current == period then
      -- Never below zero: a window's counters were set by its first approval.
      local leftAmount = math.max(tonumber(spentAmount) - tonumber(amount), 0)
      local leftCount = math.max(tonumber(spentCount) - 1, 0)
      redis.call('HSET', KEYS[6], field, period .. ':' .. string.format('%d', leftAmount) .. ':' .. string.format('%d', leftCount))
    end
  end
end

local function markReversed()
  local value = table.concat({code, detail, amount, mcc, decided, reversalId, merchant}, '|')
  if inBucket then
    redis.call('HSET', KEYS[where], originalId, value)
  else
    redis.call('SET', KEYS[4], value, 'KEEPTTL')
  end
end

if code ~= '00' then
  markReversed()
  return acknowledge(recordAmount, '', '', 'original declined', mcc)
end

-- Credit back exactly the recorded debits. Balances are integer cents:
-- anything else is refused before anything is written.
local debits = {}
for category, cents in string.gmatch(detail, '([^:,]+):(%d+)') do
  local current = redis.call('HGET', account, category)
  if current and not string.match(current, '^%-?%d+$') then
    return {'DONE', '07', 'balance is not an integer amount of cents', 0, ''}
  end
  debits[#debits + 1] = {category, cents}
end
local credits, balances, total = {}, {}, 0
for i, debit in ipairs(debits) do
  local after = redis.call('HINCRBY', account, debit[1], debit[2])
  credits[i] = debit[1] .. ':' .. debit[2]
  balances[i] = debit[1] .. ':' .. string.format('%d', after)
  total = total + tonumber(debit[2])
end
giveBack()
markReversed()
return acknowledge(string.format('%d', total), table.concat(credits, ','), table.concat(balances, ','), '', mcc)
