--[[
  Record a 07 decided outside authorize.lua / reverse.lua (for example
  "account busy" when the lock could not be had within the SLA), unless the
  id was decided already: then that first decision is returned, whatever
  the lock, and nothing is written (a retry of a decided id gets its first
  answer, and a 07 never stands beside a debit for the same id).

  An authorization declined here leaves an idempotency record (07 and the
  reason), like a 07 of authorize.lua: a script for the same id still in
  flight from another process (one that died holding the lock, say) finds
  it and debits nothing. A reversal declined here leaves no record: the
  terminal repeats it and the repeat is processed normally.

  Input:
    KEYS[1]  account:{ID}
    KEYS[2]  statements              STREAM the ledger (statements:{T} on a cluster)
    KEYS[3]  txn:{ID}:TXNID          STRING the id's older one-key record,
                                     read only when ARGV[13] is "1"
    KEYS[4..] txns:{ID}:YYYYMMDD     HASH the day buckets (see authorize.lua):
                                     consecutive days, newest first, KEYS[4]
                                     being the caller's tomorrow
    ARGV[1]  transaction id (the reversal's own id for a reversal)
    ARGV[2]  account id
    ARGV[3]  amount in cents ("0" for a reversal)
    ARGV[4]  mcc as sent
    ARGV[5]  mcc used
    ARGV[6]  merchant as sent
    ARGV[7]  category the rules chose
    ARGV[8]  reason
    ARGV[9]  statement type: "authorization" or "reversal"
    ARGV[10] the original transaction id of a reversal ("" for none)
    ARGV[11] the day of KEYS[4], in days since 1970-01-01 (UTC)
    ARGV[12] seconds a day's bucket outlives its day
    ARGV[13] "1": also read KEYS[3] (records written before the day buckets)
    ARGV[14] digest of the normalized merchant descriptor ("" for a reversal)
    ARGV[15] "1": rewrite a record found (the caller sends WAIT next, which
             then covers the write that made the record)
    ARGV[16] when the request was received (µs, the serve's wall clock): a
             first decision returned as an approval raises the record's
             HEARD to it (see authorize.lua); "" for a reversal
    ARGV[17..] optional: extra statement fields as name, value pairs (the
             ISO 8583 port's channel, stan, rrn, terminal, merchant_id)

  Output (array), the shape of authorize.lua's:
    {"UNKNOWN"}                               account does not exist; nothing written
    {"DONE", code, detail, replayed, entryid} replayed = 1: the id's first
                                              decision (code, debits/credits or
                                              reason; an approval reversed since:
                                              07 "reversed"); 0: the
                                              07 recorded (detail = reason)
    error "ERR clock …"                       Redis's day is not among KEYS[4..]
]]
local account, statements = KEYS[1], KEYS[2]
local id, kind = ARGV[1], ARGV[9]
if kind ~= 'authorization' and kind ~= 'reversal' then
  return redis.error_reply('ERR decline type must be authorization or reversal')
end

local now = redis.call('TIME')
local seconds = tonumber(now[1])
local day = math.floor(seconds / 86400)
local todayKey = 4 + tonumber(ARGV[11]) - day
if todayKey < 4 or todayKey >= #KEYS then
  return redis.error_reply('ERR clock: Redis day ' .. day .. ' is not among the buckets named (newest ' .. ARGV[11] .. ')')
end

if redis.call('EXISTS', account) == 0 then
  return {'UNKNOWN'}
end

-- A record with HEARD raised to `at` (µs), when `at` is later (as in authorize.lua).
local function heardBy(record, at)
  local head, heard, rest = string.match(record, '^([^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*)|?(%d*)(.*)$')
  local atNumber = tonumber(at)
  if not head or not atNumber or (tonumber(heard) or 0) >= atNumber then return record end
  return head .. '|' .. at .. rest
end

-- The id's first decision, if any.
local where, prior
for k = todayKey, #KEYS do
  prior = redis.call('HGET', KEYS[k], id)
  if prior then where = k break end
end
if not prior and ARGV[13] == '1' then
  prior = redis.call('GET', KEYS[3])
  if prior then where = 3 end
end
if prior then
  local record = prior
  if kind == 'authorization' and where >= 4 and string.match(prior, '^00|[^|]*|[^|]*|[^|]*|[^|]*||') then
    -- Answered the approval (not reversed since): recorded as heard now,
    -- as authorize.lua records a repeat's.
    record = heardBy(prior, ARGV[16])
  end
  if ARGV[15] == '1' or record ~= prior then
    if where == 3 then
      redis.pcall('SET', KEYS[3], prior, 'KEEPTTL')
    else
      redis.pcall('HSET', KEYS[where], id, record)
    end
  end
  local credits = string.match(prior, '^RV|%d%d|[^|]*|(.*)$')
  if kind == 'reversal' then
    if credits then return {'DONE', '00', credits, 1, ''} end
    return {'DONE', '07', 'id already used by an authorization', 1, ''}
  end
  if credits or string.sub(prior, 1, 3) == 'RV|' then
    return {'DONE', '07', 'id already used by a reversal', 1, ''}
  end
  local code, rest = string.match(prior, '^(%d%d)|(.*)$')
  if not code then
    return {'DONE', '07', 'id already used by a reversal', 1, ''}
  end
  local reversedBy = string.match(rest, '^[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)')
  if code == '00' and reversedBy and reversedBy ~= '' then
    return {'DONE', '07', 'reversed', 1, ''}
  end
  return {'DONE', code, string.match(rest, '^([^|]*)'), 1, ''}
end

local fields
if kind == 'reversal' then
  fields = {
    'type', 'reversal',
    'id', id,
    'account', ARGV[2],
    'code', '07',
    'amount', '0',
    'mcc', ARGV[4],
    'mcc_used', '',
    'merchant', ARGV[6],
    'category', '',
    'original', ARGV[10],
    'debits', '',
    'credits', '',
    'balances', '',
    'reason', ARGV[8]}
else
  fields = {
    'type', 'authorization',
    'id', id,
    'account', ARGV[2],
    'code', '07',
    'amount', ARGV[3],
    'mcc', ARGV[4],
    'mcc_used', ARGV[5],
    'merchant', ARGV[6],
    'category', ARGV[7],
    'debits', '',
    'balances', '',
    'reason', ARGV[8]}
end
for i = 17, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
local entry = redis.call('XADD', statements, '*', unpack(fields))
if kind == 'authorization' then
  local bucket = KEYS[todayKey]
  redis.call('HSET', bucket, id, '07|' .. ARGV[8] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|'
    .. (seconds - day * 86400) .. '||' .. ARGV[14])
  redis.call('EXPIREAT', bucket, (day + 1) * 86400 + tonumber(ARGV[12]), 'NX')
end
return {'DONE', '07', ARGV[8], 0, entry}
