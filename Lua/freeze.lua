--[[
  Freeze or unfreeze an account (a court order, say), with its ledger entry
  in the same execution. While frozen, authorize.lua refuses every purchase
  with "account frozen"; credits still land and balance inquiries answer.

  Input:
    KEYS[1]  account:{ID}            HASH the balances (must exist)
    KEYS[2]  controls:{ID}           HASH the field "account.frozen" holds the
                                     freeze's reason while frozen
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    ARGV[1]  "freeze" or "unfreeze"
    ARGV[2]  operation id (the entry's id)
    ARGV[3]  account id
    ARGV[4]  the reason (1-200 characters)
    ARGV[5]  who makes the change (for the entry's `by`)

  Output:
    {entryid, from, to}      from, to: "active" or "frozen"
    error "ERR account ..."  unknown account, or already in that state
]]
local account, controls, statements = KEYS[1], KEYS[2], KEYS[3]
local freeze = ARGV[1] == 'freeze'
if not freeze and ARGV[1] ~= 'unfreeze' then return redis.error_reply('ERR freeze.lua: freeze or unfreeze') end
if redis.call('EXISTS', account) == 0 then return redis.error_reply('ERR account unknown') end
local frozen = redis.call('HGET', controls, 'account.frozen') ~= false
if frozen == freeze then
  return redis.error_reply('ERR account is already ' .. (frozen and 'frozen' or 'not frozen'))
end
if freeze then
  redis.call('HSET', controls, 'account.frozen', ARGV[4])
else
  redis.call('HDEL', controls, 'account.frozen')
end
local from, to = frozen and 'frozen' or 'active', freeze and 'frozen' or 'active'
local entry = redis.call('XADD', statements, '*',
  'type', 'freeze',
  'id', ARGV[2],
  'account', ARGV[3],
  'code', '00',
  'amount', '0',
  'debits', '',
  'credits', '',
  'balances', '',
  'reason', ARGV[4],
  'from', from,
  'to', to,
  'by', ARGV[5])
return {entry, from, to}
