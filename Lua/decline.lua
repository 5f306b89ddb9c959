--[[
  Record a 07 decided outside authorize.lua (for example "account busy" when
  the lock could not be had within the SLA), so the ledger holds one entry
  per decision. Nothing is debited and no idempotency record is kept: a retry
  of the same transaction is processed normally.

  Input:
    KEYS[1]  account:{ID}
    KEYS[2]  statements
    ARGV[1]  transaction id
    ARGV[2]  account id
    ARGV[3]  amount in cents
    ARGV[4]  mcc as sent
    ARGV[5]  mcc used
    ARGV[6]  merchant as sent
    ARGV[7]  category the rules chose
    ARGV[8]  reason
    ARGV[9]  statement type: "authorization" (when absent) or "reversal"
    ARGV[10] the original transaction id of a reversal (when absent: none)

  Output:
    the stream entry id, or false when the account does not exist
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local kind = ARGV[9] or 'authorization'
if kind ~= 'authorization' and kind ~= 'reversal' then
  return redis.error_reply('ERR decline type must be authorization or reversal')
end
if kind == 'reversal' then
  return redis.call('XADD', KEYS[2], '*',
    'type', 'reversal',
    'id', ARGV[1],
    'account', ARGV[2],
    'code', '07',
    'amount', '0',
    'mcc', ARGV[4],
    'mcc_used', '',
    'merchant', ARGV[6],
    'category', '',
    'original', ARGV[10] or '',
    'debits', '',
    'credits', '',
    'balances', '',
    'reason', ARGV[8])
end
return redis.call('XADD', KEYS[2], '*',
  'type', 'authorization',
  'id', ARGV[1],
  'account', ARGV[2],
  'code', '07',
  'amount', ARGV[3],
  'mcc', ARGV[4],
  'mcc_used', ARGV[5],
  'merchant', ARGV[6],
  'category', ARGV[7],
  'debits', '',
  'balances', '',
  'reason', ARGV[8])
