--[[
  Authorize one card transaction: take the account lock, check idempotency,
  choose the category to debit, debit it and append the statement, all in one
  atomic execution.

  Input:
    KEYS[1]  account:{ID}        HASH category -> balance in cents
    KEYS[2]  lock:{ID}           STRING lock token
    KEYS[3]  txn:{ID}:TXNID      STRING first decision for this transaction id
    KEYS[4]  statements          STREAM the ledger

    ARGV[1]  lock token (random per request)
    ARGV[2]  lock ttl in milliseconds
    ARGV[3]  transaction id
    ARGV[4]  account id
    ARGV[5]  amount in cents (integer, > 0)
    ARGV[6]  mcc as sent by the terminal
    ARGV[7]  mcc used after merchant rules
    ARGV[8]  merchant descriptor as sent
    ARGV[9]  category the rules chose
    ARGV[10] fallback category
    ARGV[11] fallback mode: "whole" or "split"
    ARGV[12] idempotency record ttl in seconds (the reversal window plus a day)
    ARGV[13] merchant descriptor normalized (kept for a reversal's match check)
    ARGV[14..] optional: extra statement fields as name, value pairs appended
             to the statement after the usual ones (the ISO 8583 port sends
             channel, stan, rrn, terminal, merchant_id); none from the
             line-JSON port

  Output (array):
    {"UNKNOWN"}                               account does not exist; nothing written
    {"LOCKED", pttl}                          another holder has the lock; pttl = its
                                              remaining ms (-1: no expiry)
    {"DONE", code, detail, replayed, entryid} decision made; code "00" | "51" | "07";
                                              detail = debits ("MEAL:700,CASH:300") for
                                              00, reason for 07, "" for 51;
                                              replayed = 1 when the transaction id was
                                              seen before (nothing debited or written)
  The caller holds the lock after LOCKED is not returned, and releases it
  with unlock.lua.

  The idempotency record txn:{ID}:TXNID is
    CODE|DETAIL|AMOUNT|MCC|TIME_MS|REVERSED_BY|MERCHANT
  CODE 00/51/07; DETAIL the debits of a 00 (MEAL:700,CASH:300), the reason of
  a 07, empty for a 51; AMOUNT in cents; TIME_MS when it was decided (Redis
  clock); REVERSED_BY the id of the reversal that reversed it, empty until
  then; MERCHANT normalized, last because it may contain '|'. reverse.lua
  reads and updates it; a tombstone left by a reversal whose original was
  never seen is such a record with CODE 07 and DETAIL "reversed". A record
  starting with "RV|" belongs to a reversal's own id (see reverse.lua).
  Records written before this format (CODE|DETAIL) are still understood.
]]
local account, lock, txn, statements = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, ttl = ARGV[1], ARGV[2]

if redis.call('EXISTS', account) == 0 then
  return {'UNKNOWN'}
end

if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then
  if redis.call('GET', lock) ~= token then
    return {'LOCKED', redis.call('PTTL', lock)}
  end
  redis.call('PEXPIRE', lock, ttl)
end

local prior = redis.call('GET', txn)
if prior then
  local code, rest = string.match(prior, '^(%d%d)|(.*)$')
  if not code then
    return {'DONE', '07', 'id already used by a reversal', 1, ''}
  end
  local detail = string.match(rest, '^([^|]*)')
  return {'DONE', code, detail, 1, ''}
end

local id, accountId = ARGV[3], ARGV[4]
local amount = tonumber(ARGV[5])
local category, fallback, mode = ARGV[9], ARGV[10], ARGV[11]

-- Balances are integer cents; anything else is refused rather than guessed.
local function balanceOf(value)
  if not value then return 0, true end
  if not string.match(value, '^%-?%d+$') then return 0, false end
  return tonumber(value), true
end

local categoryRaw, fallbackRaw = unpack(redis.call('HMGET', account, category, fallback))
local categoryBalance, categoryOk = balanceOf(categoryRaw)
local fallbackBalance, fallbackOk = balanceOf(fallbackRaw)

local code, reason = '51', ''
local debits = {}
if not (categoryOk and fallbackOk) then
  code, reason = '07', 'balance is not an integer amount of cents'
elseif categoryBalance >= amount then
  debits = {{category, amount}}
elseif category ~= fallback then
  if mode == 'split' then
    local fromCategory = math.max(0, categoryBalance)
    if fallbackBalance >= amount - fromCategory then
      debits = {{category, fromCategory}, {fallback, amount - fromCategory}}
      if fromCategory == 0 then debits = {{fallback, amount}} end
    end
  elseif fallbackBalance >= amount then
    debits = {{fallback, amount}}
  end
end

local debitList, balanceList = {}, {}
if #debits > 0 then
  code = '00'
  for i, debit in ipairs(debits) do
    local after = redis.call('HINCRBY', account, debit[1], string.format('%d', -debit[2]))
    debitList[i] = debit[1] .. ':' .. string.format('%d', debit[2])
    balanceList[i] = debit[1] .. ':' .. string.format('%d', after)
  end
end
local debitText = table.concat(debitList, ',')

local fields = {
  'type', 'authorization',
  'id', id,
  'account', accountId,
  'code', code,
  'amount', ARGV[5],
  'mcc', ARGV[6],
  'mcc_used', ARGV[7],
  'merchant', ARGV[8],
  'category', category,
  'debits', debitText,
  'balances', table.concat(balanceList, ','),
  'reason', reason}
for i = 14, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
local entry = redis.call('XADD', statements, '*', unpack(fields))

local detail = debitText
if code == '07' then detail = reason end
local now = redis.call('TIME')
local nowMs = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
redis.call('SET', txn, table.concat({code, detail, ARGV[5], ARGV[6], nowMs, '', ARGV[13] or ''}, '|'), 'EX', ARGV[12])
return {'DONE', code, detail, 0, entry}
