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
    ARGV[11..] optional: extra statement fields as name, value pairs (the
             ISO 8583 port's channel, stan, rrn, terminal, merchant_id);
             ARGV[9] and ARGV[10] must then be given ("" for no original)

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
local fields
if kind == 'reversal' then
  fields = {
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
    'reason', ARGV[8]}
else
  fields = {
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
  'reason', ARGV[8]}
end
for i = 11, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
