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
    KEYS[1]  account:{ID}        HASH category -> balance in cents
    KEYS[2]  lock:{ID}           STRING lock token
    KEYS[3]  txn:{ID}:ORIGINAL   STRING the original's record (see authorize.lua)
    KEYS[4]  txn:{ID}:REVID      STRING the reversal's own record: "RV|00|ORIGINAL|CREDITS"
    KEYS[5]  statements          STREAM the ledger

    ARGV[1]  lock token (random per request)
    ARGV[2]  lock ttl in milliseconds
    ARGV[3]  reversal id
    ARGV[4]  account id
    ARGV[5]  original transaction id
    ARGV[6]  amount in cents the terminal gave, or "" (then not checked)
    ARGV[7]  mcc the terminal gave, or ""
    ARGV[8]  merchant descriptor the terminal gave, normalized, or ""
    ARGV[9]  record ttl in seconds (as authorize.lua's ARGV[12])
    ARGV[10] reversal window in milliseconds: an original decided longer ago
             than this is "original not found"
    ARGV[11..] optional: extra statement fields as name, value pairs appended
             to the reversal statement (the ISO 8583 port sends channel, stan,
             rrn, terminal, merchant_id); none from the line-JSON port

  Output (array), the shape of authorize.lua's:
    {"UNKNOWN"}                               account does not exist; nothing written
    {"LOCKED", pttl}                          another holder has the lock
    {"DONE", code, detail, replayed, entryid} code "00" (reversal acknowledged;
                                              detail = the credits, "" when
                                              nothing was credited) or "07"
                                              (detail = reason); replayed = 1
                                              when the reversal id was seen
                                              before (nothing written)
  A 07 (mismatch, original not found) is recorded in the ledger but leaves no
  record: a corrected retry is processed normally. The caller releases the
  lock with unlock.lua.
]]
local account, lock, original, own, statements = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, ttl = ARGV[1], ARGV[2]
local reversalId, accountId, originalId = ARGV[3], ARGV[4], ARGV[5]
local givenAmount, givenMcc, givenMerchant = ARGV[6], ARGV[7], ARGV[8]
local recordTTL, window = ARGV[9], tonumber(ARGV[10])

if redis.call('EXISTS', account) == 0 then
  return {'UNKNOWN'}
end

if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then
  if redis.call('GET', lock) ~= token then
    return {'LOCKED', redis.call('PTTL', lock)}
  end
  redis.call('PEXPIRE', lock, ttl)
end

local mine = redis.call('GET', own)
if mine then
  local credits = string.match(mine, '^RV|%d%d|[^|]*|(.*)$')
  if credits then
    return {'DONE', '00', credits, 1, ''}
  end
  return {'DONE', '07', 'id already used by an authorization', 1, ''}
end

local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local nowText = string.format('%d', nowMs)

-- The original's record: CODE|DETAIL|AMOUNT|MCC|TIME_MS|REVERSED_BY|MERCHANT
-- (or CODE|DETAIL, written before that format).
local record = redis.call('GET', original)
local code, detail, amount, mcc, decidedAt, reversedBy, merchant
if record then
  code, detail, amount, mcc, decidedAt, reversedBy, merchant =
    string.match(record, '^(%d%d)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not code then
    code, detail = string.match(record, '^(%d%d)|([^|]*)$')
    amount, mcc, decidedAt, reversedBy, merchant = '', '', '', '', ''
  end
  if not code then
    return {'DONE', '07', 'original is a reversal', 0, ''}
  end
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
  for i = 11, #ARGV - 1, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  return redis.call('XADD', statements, '*', unpack(fields))
end

local function refuse(reason)
  local entry = statement('07', '0', '', '', reason, givenMcc, givenMerchant)
  return {'DONE', '07', reason, 0, entry}
end

local function acknowledge(statementAmount, credits, balances, reason, statementMcc, statementMerchant)
  local entry = statement('00', statementAmount, credits, balances, reason, statementMcc, statementMerchant)
  redis.call('SET', own, 'RV|00|' .. originalId .. '|' .. credits, 'EX', recordTTL)
  return {'DONE', '00', credits, 0, entry}
end

if not record then
  -- Never seen: leave the tombstone, so the original is refused if it comes.
  redis.call('SET', original,
    table.concat({'07', 'reversed', givenAmount, givenMcc, nowText, reversalId, givenMerchant}, '|'),
    'EX', recordTTL)
  local statementAmount = givenAmount
  if statementAmount == '' then statementAmount = '0' end
  return acknowledge(statementAmount, '', '', 'original not seen; tombstone left', givenMcc, givenMerchant)
end

if decidedAt ~= '' and tonumber(decidedAt) and nowMs - tonumber(decidedAt) > window then
  return refuse('original not found')
end
if givenAmount ~= '' and amount ~= '' and givenAmount ~= amount then
  return refuse('amount does not match the original')
end
if givenMcc ~= '' and mcc ~= '' and givenMcc ~= mcc then
  return refuse('mcc does not match the original')
end
if givenMerchant ~= '' and merchant ~= '' and givenMerchant ~= merchant then
  return refuse('merchant does not match the original')
end

local recordAmount = amount
if recordAmount == '' then recordAmount = '0' end

if reversedBy ~= '' then
  return acknowledge(recordAmount, '', '', 'already reversed', mcc, merchant)
end

local function markReversed()
  redis.call('SET', original,
    table.concat({code, detail, amount, mcc, decidedAt, reversalId, merchant}, '|'), 'KEEPTTL')
end

if code ~= '00' then
  markReversed()
  return acknowledge(recordAmount, '', '', 'original declined', mcc, merchant)
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
markReversed()
return acknowledge(string.format('%d', total), table.concat(credits, ','), table.concat(balances, ','), '', mcc, merchant)
